#!/usr/bin/env bash
# System packages some tests use: R with lme4 (agreement of our mixed models with lme4),
# Chromium (the HTML report is checked in a real headless browser, and printed to PDF) and
# poppler-utils (pdftotext, pdfimages, pdfinfo read the PDF back). Debian packages; needs root.
set -euo pipefail
pkgs="r-base-core r-cran-lme4 chromium poppler-utils"
missing=""
for p in $pkgs; do dpkg -s "$p" >/dev/null 2>&1 || missing="$missing $p"; done
if [ -n "$missing" ] && [ "$(id -u)" != 0 ]; then
  echo "system-deps: not root; skipping apt-get install of:$missing (the lme4-agreement, browser and PDF tests will be skipped with a reason)" >&2
  exit 0
fi
if [ -n "$missing" ]; then
  export DEBIAN_FRONTEND=noninteractive
  apt-get update -qq
  apt-get install -y -qq --no-install-recommends $missing >/dev/null
fi
