#!/usr/bin/env bash
# The hot-path benchmark of this checkout run against the agent of another commit and against this one's,
# alternating, so that a change to the agent is measured with the same benchmark on the same host in one go:
#
#   bash bench/hot-path/compare-commits.sh <commit> <rounds> <out-dir> [bench:hot-path arguments...]
#
# The other commit's tree is checked out beside (a git worktree) with this checkout's bench/ copied over it,
# so the benchmark is this one and everything it starts (backend/, shared/, scripts/) the other commit's. Each
# run writes <out-dir>/<before|after>-<round>/hot-path-<device>.md; the rows of each are printed as they finish.
set -euo pipefail
if [ $# -lt 3 ]; then
  echo "usage: bash bench/hot-path/compare-commits.sh <commit> <rounds> <out-dir> [bench:hot-path arguments...]" >&2
  exit 2
fi
commit=$1
rounds=$2
out=$(realpath -m "$3")
shift 3
here=$(git rev-parse --show-toplevel)
scratch=$(mktemp -d)
before=$scratch/before
git -C "$here" worktree add --quiet --detach "$before" "$commit"
trap 'git -C "$here" worktree remove --force "$before"; rm -rf "$scratch"' EXIT
cp -r "$here/bench/." "$before/bench/"
ln -s "$here/node_modules" "$before/node_modules"
export PATH="$here/node_modules/.bin:$PATH"
for round in $(seq 1 "$rounds"); do
  for side in before after; do
    tree=$here
    [ "$side" = before ] && tree=$before
    (cd "$tree" && node bench/hot-path/hot-path.ts "$@" --out "$out/$side-$round" > /dev/null)
    echo "== $side ($([ "$side" = before ] && echo "$commit" || echo this checkout)), round $round"
    grep -E '^\| (agent|anchor|raw|gateway|relay-anchor)' "$out/$side-$round"/hot-path-*.md || true
  done
done
