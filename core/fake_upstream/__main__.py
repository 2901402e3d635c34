"""``python -m modelbroker.fake_upstream --port 8001``: the fake upstream in the foreground."""

from modelbroker.fake_upstream import main

main()
