"""The appropriateness suite's library (Moore et al., FAccT 2025): stimuli and contexts, the LLM judge,
judge validation, analysis, replication mode and report. The suite's stages are in
:mod:`audit.suites.appropriateness`."""
