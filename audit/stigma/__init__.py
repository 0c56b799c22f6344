"""The stigma suite's library (Moore et al., FAccT 2025): stimuli (:mod:`.stimuli`), answer parsing
and coding (:mod:`.parse`), analysis (:mod:`.analysis`), replication mode (:mod:`.replicate`) and the
report (:mod:`.report`). The stages are in :mod:`audit.suites.stigma`."""
