#!/usr/bin/env bash
# Installs the system packages jadwal's tests and example-corpus script use (espeak-ng, sox, flac:
# the Kaldi wav.scp command tests run real `sox` and `flac` pipes)
# when they are missing. As root (CI) it installs them with apt-get; otherwise it says what to run.
set -u
missing=()
command -v espeak-ng >/dev/null 2>&1 || missing+=(espeak-ng)
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v flac >/dev/null 2>&1 || missing+=(flac)
[ ${#missing[@]} -eq 0 ] && exit 0
if [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null 2>&1; then
  echo "installing system packages: ${missing[*]}"
  apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null \
    || { echo "warning: could not install ${missing[*]}; tests that need them will be skipped" >&2; exit 0; }
else
  echo "note: missing system packages: ${missing[*]}." >&2
  echo "      install them (e.g. 'sudo apt-get install ${missing[*]}'); tests that need them are skipped." >&2
fi
exit 0
