"""The data doctor: shortcuts, leaks, label errors and too little data, before they cost you.

``diagnose`` runs every check on a scanned dataset and returns a ``DoctorReport``.
``train`` passes what it already has (pooled features, its split, the exported model,
the small copies made for the split); ``sightwire doctor`` computes the features itself.

==========================  =======================================================
``run``                     ``diagnose``: the checks in order, their sections gathered
``options``                 ``DoctorOptions``: which checks, their settings
``report``                  ``DoctorReport``, ``Finding``; the ``doctor.json`` format
``stats``                   cross-validated scores against chance, with error bars
``shortcuts``               border / colour / file-property cues against chance
``labels``                  out-of-fold predictions and confident learning
``curve``                   per-class learning curve: will more photos help?
``attribution``             occlusion maps of the exported TFLite model
``features``                pooled backbone features for the standalone doctor
``thumbnails``              image references with JPEG ``data:`` thumbnails
``sections/``               one builder per ``doctor.json`` section, with the wording
==========================  =======================================================

Near-duplicates are found by ``trainer.duplicates`` and the small copies made by
``trainer.image_set``: the split needs both, and must not depend on the doctor.
"""

from trainer.doctor.attribution import attribution, outside_share
from trainer.doctor.options import CHECKS, DoctorOptions
from trainer.doctor.report import DoctorReport, Finding
from trainer.doctor.run import diagnose, item_order
from trainer.doctor.shortcuts import CUE_TITLES

__all__ = [
    "CHECKS",
    "CUE_TITLES",
    "DoctorOptions",
    "DoctorReport",
    "Finding",
    "attribution",
    "diagnose",
    "item_order",
    "outside_share",
]
