"""Human ratings of a run's replies: blinded packets, import, agreement and per-group scorer validity.

The loop (docs/ratings.md):

1. :func:`make_packet` (``empathy-audit ratings packet``): a stratified, blinded sample of the stored
   replies, written as a rater guide, a CSV, a printable HTML and a Label Studio project per rater;
2. :func:`import_ratings` (``empathy-audit ratings import``): a filled CSV or a Label Studio JSON
   export into the run store (table ``ratings``);
3. :func:`consensus`, :func:`inter_rater_agreement`, :func:`scorer_validity`,
   :func:`differential_error_test`, :func:`ratings_summary` (``empathy-audit ratings agreement``, the
   report's section "Does the scorer treat groups alike?", results.json key ``human_ratings``).

``RunStore.human_ratings_df()`` gives the ratings as ``request_key, rater, measure, value``; pass it
to :func:`consensus` for one value per reply and measure.
"""

from __future__ import annotations

from .agreement import consensus, inter_rater_agreement, krippendorff_alpha, pairwise_kappa
from .importing import ImportSummary, import_ratings, read_rating_file
from .packet import Packet, label_studio_config, make_packet
from .summary import RatingsSummary, ratings_summary, run_ratings_summary, summary_text
from .validity import differential_error_test, group_error_test, scorer_validity, validity_frame

__all__ = ["ImportSummary", "Packet", "RatingsSummary", "consensus", "differential_error_test", "group_error_test",
           "import_ratings", "inter_rater_agreement", "krippendorff_alpha", "label_studio_config", "make_packet",
           "pairwise_kappa", "ratings_summary", "read_rating_file", "run_ratings_summary", "scorer_validity",
           "summary_text", "validity_frame"]
