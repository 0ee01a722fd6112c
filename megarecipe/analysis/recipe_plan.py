"""What passes between the recipe's pipeline (megarecipe/recipes/pipeline.py) and its report: the stage order
and the files the pipeline keeps in OUT. Here, below both, so the report reads them without importing recipes/."""
from __future__ import annotations

PLAN_JSON, STAGES_JSON = "plan.json", "stages.json"
FITS_JSON, REPORT_MD = "fits.json", "REPORT.md"   # written by the last stage (analysis/recipe_report.py)

# the stages in the order they run, which is also the order REPORT.md's time table lists them in
DATA, STANDARD, REGULARIZED, ENSEMBLES, DISTILL, DOWNSTREAM, REPORT = STAGES = (
    "data", "standard", "regularized", "ensembles", "distill", "downstream", "fits+report")
