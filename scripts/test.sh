#!/usr/bin/env bash
# The whole test suite, as the README's test command runs it: Debian test dependencies, the
# WebAssembly build, typecheck, lint, then every bun:test file. Ends with one summary line
#   tests: N passed, N failed[, N skipped]
# where the typecheck and the lint count as one test each. Exits non-zero on any failure.
set -uo pipefail
cd "$(dirname "$0")/.."

passed=0
failed=0
skipped=0

step() { # name, command...
  local name="$1"
  shift
  echo "== $name"
  if "$@"; then
    passed=$((passed + 1))
  else
    echo "== $name FAILED" >&2
    failed=$((failed + 1))
  fi
}

bash scripts/install-test-deps.sh || echo "install-test-deps failed; tests needing those tools will skip" >&2

if ! bun run build:wasm; then
  echo "tests: 0 passed, 1 failed"
  exit 1
fi

# The real step-ca from Debian's Go sources (cached per machine), built here so no test's time
# includes the first build; without the packages the tests that need it skip with the reason.
bun test/stepca-real/build.ts || echo "building step-ca failed; tests against the real CA will fail" >&2

step typecheck bun run typecheck
step lint bun run lint

# bun:test prints its summary as " N pass", " N fail", " N skip" lines; each run adds to them.
run_tests() { # bun test arguments...
  local log rc p f s
  log="$(mktemp)"
  # A safety net, not a budget: no verdict may depend on how fast the machine is, so a test
  # gets a minute before it counts as hung (Bun's own default, 5 s, failed tests on a busy
  # machine).
  bun test --timeout 60000 "$@" 2>&1 | tee "$log"
  rc=${PIPESTATUS[0]}
  p=$(grep -E '^ *[0-9]+ pass$' "$log" | tail -1 | tr -dc '0-9')
  f=$(grep -E '^ *[0-9]+ fail$' "$log" | tail -1 | tr -dc '0-9')
  s=$(grep -E '^ *[0-9]+ skip$' "$log" | tail -1 | tr -dc '0-9')
  rm -f "$log"
  passed=$((passed + ${p:-0}))
  failed=$((failed + ${f:-0}))
  skipped=$((skipped + ${s:-0}))
  if [ "$rc" -ne 0 ] && [ "${f:-0}" -eq 0 ]; then
    echo "bun test exited $rc without reporting a failed test" >&2
    failed=$((failed + 1))
  fi
}

run_tests "$@"
# The whole suite: every test that starts a proxy through the harness runs again with another
# number of event loops (issue 19) — one if the default (`auto`) gives several here, else two:
# the same behaviour whichever loop an agent's connection lands in.
if [ $# -eq 0 ]; then
  default_loops=$(bun -e 'import { autoLoops } from "./src/config/proxy-config.ts"; console.log(autoLoops())')
  other=1
  [ "$default_loops" -eq 1 ] && other=2
  mapfile -t harnessed < <(grep -rl "startHarness(" test --include="*.test.ts" | sort)
  echo "== the default here is $default_loops event loops; again with $other (SLAPENIR_TEST_LOOPS=$other): ${#harnessed[@]} files"
  SLAPENIR_TEST_LOOPS=$other run_tests "${harnessed[@]}"
fi

line="tests: $passed passed, $failed failed"
[ "$skipped" -gt 0 ] && line="$line, $skipped skipped"
echo "$line"
[ "$failed" -eq 0 ]
