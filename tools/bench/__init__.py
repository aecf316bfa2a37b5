"""The benchmark behind `make bench` (not a test suite: no module here is named test_*)."""
