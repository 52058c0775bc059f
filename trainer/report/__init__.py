"""The bundle's report as one self-contained HTML page: ``BUNDLE/report/index.html``.

Everything is read back from what ``train`` already wrote (``manifest.json``,
``report/metrics.json``, ``split.json``, the confusion PNGs, an optional
``report/doctor.json``), so the page can be rebuilt at any time with
``python -m trainer.report BUNDLE`` without training again.

The page must open offline, from a USB stick or an e-mail attachment, years later:
every picture is an inline ``data:`` URI and there is no external CSS, JS or font.
All text goes through ``html.escape`` because class names come from folder names.
Each optional section (search, calibration, doctor, gallery...) is left out when its
data is missing: a report of a partial bundle is still a report.

==================  ===============================================================
``html``            the page: header, sections in order, ``write_report``
``inputs``          the bundle's files read back (``Inputs``), tolerant of gaps
``results``         sections on what the model achieved
``provenance``      sections on where the results come from
``doctor_page``     the data doctor's findings, pairs, label errors, where the model looks
``doctor_plots``    the doctor's charts: shortcut cues against chance, learning curves
``intervals``       Wilson 95% intervals of test accuracy; too few test photos
``pictures``        curves, confusion matrices, thumbnails as ``data:`` URIs
``markup``          escaping, tables, any JSON as HTML
``__main__``        ``python -m trainer.report BUNDLE``
==================  ===============================================================
"""

from trainer.report.html import render, write_report
from trainer.report.markup import render_any
from trainer.report.pictures import thumbnail
from trainer.report.results import GALLERY_MAX

__all__ = ["GALLERY_MAX", "render", "render_any", "thumbnail", "write_report"]
