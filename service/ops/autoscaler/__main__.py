"""`python -m service.ops.autoscaler`: the same as `propensity autoscale` (settings from the environment)."""

from service.ops.autoscaler.loop import main

raise SystemExit(main())
