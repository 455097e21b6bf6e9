# Sourced by the fetch scripts: check_sha FILE EXPECTED fails, naming both digests, on a mismatch.
check_sha() {
  local got
  got=$(sha256sum "$1" | cut -d' ' -f1)
  if [ "$got" != "$2" ]; then
    echo "checksum mismatch for $1: got $got, expected $2" >&2
    return 1
  fi
}
