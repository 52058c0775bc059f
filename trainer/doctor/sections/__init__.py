"""One builder per section of ``doctor.json``: check results in, ``(section, findings)`` out.

A builder turns what a check measured into the JSON section (``trainer.doctor.report``
documents its shape) and the summary lines a user reads, with advice. The checks
themselves (statistics, models) live one level up and know nothing about wording.
"""
