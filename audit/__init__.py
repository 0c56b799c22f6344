"""empathy-audit: audit LLMs used for mental-health support for demographic bias.

The flow (see README): spec -> variants -> prompts -> replies -> scores -> models -> report.
Every stage reads from and writes to the run store, so any stage can be resumed or re-run.
"""

__version__ = "0.1.0"
