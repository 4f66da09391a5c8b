"""Stage 6, leaner: TinyHelen-style rewriting into simple English, validated."""
