"""`python -m service.autoscaler`: the same as `propensity autoscale` (settings from the environment)."""

from service.autoscaler.loop import main

raise SystemExit(main())
