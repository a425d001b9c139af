#!/usr/bin/env bash
# Makes docs/report_screenshot.png: the HTML report of `mia demo` plus an attack on its map, rendered
# by headless Chromium (apt-get install chromium). Run from anywhere: bash docs/report_screenshot.sh
set -euo pipefail
repo="$(cd "$(dirname "$0")/.." && pwd)"
mia="${MIA:-$repo/.venv/bin/mia}"
work="$(mktemp -d)"
cd "$work"
"$mia" demo --method teacher-forced -q > demo.out   # the one-pass check: same verdicts, minutes faster on a CPU
map="$(ls -d Prefixes/*/ | head -1)"
"$mia" attack --prefix_map "$map" --model gemma-3-270m --signals loss,zlib,mink,minkpp -q > /dev/null
"$mia" report "$map" --out report.html
chromium --headless --no-sandbox --disable-gpu --hide-scrollbars --window-size=1100,3200 \
    --screenshot="$repo/docs/report_screenshot.png" "file://$work/report.html"
echo "screenshot: $repo/docs/report_screenshot.png (report: $work/report.html)"
