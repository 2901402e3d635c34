"""Tests of the reliability layer: retries, cooldowns, deadlines, pacing, limits, strategies,
reload, bad input and fault injection. docs/reliability.md is what they hold the code to."""
