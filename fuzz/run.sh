#!/usr/bin/env bash
# Run one fuzz target for a bounded time: ./fuzz/run.sh seclang|body|json_tape|json_onepass [SECONDS]
# Seeds the corpus from CRS's rules and go-ftw tests in ../shared/crs (read, not copied into git).
set -eu
cd "$(dirname "$0")"
target=${1:?usage: run.sh seclang|body|json_tape|json_onepass [seconds]}
secs=${2:-600}
crs=${CRS_DIR:-../../shared/crs}
mkdir -p "corpus/$target"
if [ -d "$crs/rules" ] && [ -z "$(ls -A "corpus/$target")" ]; then
  case "$target" in
    seclang) cp "$crs"/rules/*.conf "corpus/$target/" ;;
    body)
      i=0
      # Request bodies from the regression tests, each behind a processor byte.
      { grep -rh "^ *data: " "$crs/tests/regression/tests" || true; } | head -400 | while read -r line; do
        body=${line#*data: }
        for p in 0 1 2 3; do printf "\\x0$p%s" "$body" > "corpus/$target/seed-$i-$p"; done
        i=$((i + 1))
      done ;;
    json_tape)
      # JSON documents: the go-ftw tests' JSON bodies and the project's own fixtures.
      i=0
      { grep -rh "^ *data: *[{[]" "$crs/tests/regression/tests" || true; } | head -300 | while read -r line; do
        printf "%s" "${line#*data: }" > "corpus/$target/seed-$i"
        i=$((i + 1))
      done
      printf '{"a":[1,-0,2.5e3,"\\u00e9\\ud83d\\ude00"],"b":{"c":null,"d":true}}' > "corpus/$target/seed-x" ;;
    json_onepass)
      # Bodies for the target's own schema (fuzz_targets/json_onepass.rs), valid and not.
      printf '{"a":"x"}' > "corpus/$target/seed-0"
      printf '{"a":"ab","b":null,"c":2.5,"d":"\\u00e9","e":[{"a":"q"}],"f":{"x":true},"g":"a@b.co","h":"abc","i":"s","j":[1,2],"k":"k","l":[{}]}' > "corpus/$target/seed-1"
      printf '{"a":"x","i":6,"f":{"a":true,"\\u0062":false}}' > "corpus/$target/seed-2" ;;
  esac
fi
exec cargo +nightly fuzz run "$target" "corpus/$target" -- -max_total_time="$secs" -timeout=10 -rss_limit_mb=2048
