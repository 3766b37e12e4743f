#!/bin/sh
# Greets the player, then echoes every line back.
echo "echo-tcp: say something and I will say it back"
exec cat
