#!/usr/bin/env bash
# Re-create funasr_nano/bench/site_vendor/ (the JavaScript/CSS that asv 0.6.6's published site
# loads from CDNs) from the npm registry with `npm pack`, at the pinned versions, with licences.
# Only needed to change a version; the vendored files are committed. See site_vendor/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."
dest=funasr_nano/bench/site_vendor
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# package@version  files (inside the tarball's package/) ...
while read -r spec files; do
    [ -z "$spec" ] && continue
    name=${spec%@*}; ver=${spec##*@}
    (cd "$tmp" && npm pack --silent "$spec" >/dev/null)
    mkdir -p "$tmp/$name" && tar xzf "$tmp/$name-$ver.tgz" -C "$tmp/$name"
    out="$dest/$name-$ver"
    rm -rf "$out" && mkdir -p "$out"
    for f in $files; do install -D -m 644 "$tmp/$name/package/$f" "$out/$(basename "$f")"; done
done <<'LIST'
jquery@3.3.1 dist/jquery.min.js LICENSE.txt
flot@0.8.3 jquery.flot.js jquery.flot.time.js jquery.flot.selection.js jquery.flot.categories.js LICENSE.txt
flot-orderbars@1.0.0 js/jquery.flot.orderBars.js
stupid-table-plugin@1.1.3 stupidtable.min.js LICENSE
blueimp-md5@2.19.0 js/md5.min.js LICENSE.txt
bootstrap@3.1.1 dist/js/bootstrap.min.js dist/css/bootstrap.min.css LICENSE
LIST
# flot-orderbars ships no licence file; its source header carries the MIT statement.
head -n 8 "$dest/flot-orderbars-1.0.0/jquery.flot.orderBars.js" > "$dest/flot-orderbars-1.0.0/LICENSE"
echo "vendored into $dest:"; find "$dest" -type f ! -name README.md | sort
