#!/usr/bin/env bash
# SPDX-License-Identifier: Apache-2.0
# The offline view in a real browser: a known trace (gpulife_view_fixture) is turned into a page
# by gpulife_view, which headless Chromium loads from a file with the network unreachable; the
# page must load without a console message or error and show the expected tensors.
#   viewer_in_browser.sh <gpulife_view_fixture> <gpulife_view> <work dir> [screenshot.png]
# The optional screenshot is of the view stacked by tag (docs/images/ has one made so).
# Exit 77 (CTest: skipped) when Chromium is not installed (scripts/install-deps.sh installs it).
set -euo pipefail
fixture=$1 view=$2 work=$3 screenshot=${4:-}

browser=""
for candidate in chromium chromium-browser google-chrome; do
  if command -v "$candidate" >/dev/null 2>&1; then browser=$(command -v "$candidate"); break; fi
done
if [ -z "$browser" ]; then
  echo "SKIP: no chromium on PATH (scripts/install-deps.sh installs Debian's chromium)"
  exit 77
fi

rm -rf "$work"
mkdir -p "$work"
"$fixture" "$work"
"$view" "$work/trace.json" -o "$work/view.html"
cmp -s "$work/view.html" "$work/direct.html" ||
  { echo "FAIL: gpulife_view and write_timeline_view made different pages"; exit 1; }

# Self-contained: nothing in the page may load from anywhere.
if grep -Eiq '<script[^>]+src=|<link[^>]+href=|<img[^>]+src=|@import|url\(|fetch\(|XMLHttpRequest' \
    "$work/view.html"; then
  echo "FAIL: the page references an external resource"; exit 1
fi

flags=(--headless --no-sandbox --disable-gpu --disable-quic --no-first-run
       --disable-background-networking --disable-component-update --disable-sync
       --host-resolver-rules="MAP * ~NOTFOUND" --window-size=1280,900 --hide-scrollbars
       --enable-logging=stderr --v=0)
first_id=$(head -n 1 "$work/expected.txt" | cut -d' ' -f1)
url="file://$(cd "$work" && pwd)/view.html#tensor=$first_id"
profile=$(mktemp -d)
trap 'rm -rf "$profile"' EXIT
timeout 120 "$browser" "${flags[@]}" --user-data-dir="$profile" --dump-dom "$url" \
  >"$work/dom.html" 2>"$work/browser.log" || { cat "$work/browser.log"; echo "FAIL: $browser failed"; exit 1; }

fail=0
# Every console message the page caused (errors, warnings, logs) is a failure: the page logs
# nothing when all is well.
if grep -F 'CONSOLE' "$work/browser.log"; then
  echo "FAIL: the page wrote to the console"; fail=1
fi
grep -q 'id="gpulife-status" data-status="ready"' "$work/dom.html" ||
  { echo "FAIL: the page did not finish rendering"; grep -o 'id="gpulife-status"[^>]*' "$work/dom.html" || true; fail=1; }
grep -q '<pre id="gpulife-errors"></pre>' "$work/dom.html" ||
  { echo "FAIL: the page reported errors:"; grep -A5 'gpulife-errors' "$work/dom.html"; fail=1; }
while read -r id tag bytes; do
  # its row in the table of largest tensors, with its tag and where it was made
  row=$(grep -o "<tr class=\"tensor\" data-tensor=\"$id\">.*</tr>" "$work/dom.html" | sed 's#</tr>.*##' || true)
  if [ -z "$row" ]; then echo "FAIL: tensor #$id '$tag' is not in the table"; fail=1; continue; fi
  case "$row" in *"<td>$tag</td>"*) ;; *) echo "FAIL: row of #$id lacks tag '$tag': $row"; fail=1;; esac
  case "$row" in *view_fixture.cpp*) ;; *) echo "FAIL: row of #$id lacks its site: $row"; fail=1;; esac
  # and its band in the chart
  grep -q "data-tensor=\"$id\"[^>]*class=\"band\"\|class=\"band\"[^>]*data-tensor=\"$id\"\|<polygon[^>]*data-tensor=\"$id\"" "$work/dom.html" ||
    { echo "FAIL: tensor #$id '$tag' has no band in the chart"; fail=1; }
done <"$work/expected.txt"
# the tensor named in the URL is described with its site and stack
details=$(tr '\n' ' ' <"$work/dom.html" | grep -o '<div id="details"[^>]*>[^<]*' || true)
case "$details" in
  *"tensor #$first_id"*"made at "*view_fixture.cpp*"stack:"*main*) ;;
  *) echo "FAIL: the details of #$first_id lack its site or stack: $details"; fail=1;;
esac
grep -q 'class="oom"' "$work/dom.html" || { echo "FAIL: no out-of-memory marker"; fail=1; }

# Again stacked by tag along time, as a screenshot (which resizes the window: every redraw must
# work too).
timeout 120 "$browser" "${flags[@]}" --user-data-dir="$profile" \
  --screenshot="${screenshot:-$work/view.png}" \
  "file://$(cd "$work" && pwd)/view.html#stack=tag&axis=time&tensor=$first_id" \
  >"$work/browser-tag.log" 2>&1 || { cat "$work/browser-tag.log"; echo "FAIL: $browser failed"; exit 1; }
if grep -F 'CONSOLE' "$work/browser-tag.log"; then
  echo "FAIL: the page stacked by tag wrote to the console"; fail=1
fi
[ "$fail" -eq 0 ] && echo "PASS: $(wc -l <"$work/expected.txt") expected tensors shown, no console message"
exit "$fail"
