// integration tests: see support/
