"""Multi-turn persona client simulation red-teaming (PCSA; Xu et al. 2026, arXiv 2604.04842) and its
equity question: the suite ``pcsa`` (:mod:`audit.suites.pcsa`). See docs/pcsa.md."""
