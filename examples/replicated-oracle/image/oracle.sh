#!/bin/sh
# Answers yes/no questions about the secret: one instance per team keeps brute force fair.
echo "Ask me whether the flag starts with a prefix:"
while read -r prefix; do
  case "$SECRET" in
    "$prefix"*) echo yes ;;
    *) echo no ;;
  esac
done
