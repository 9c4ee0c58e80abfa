"""The test suite: one package per package of the tree, and the shared harness in tests.harness."""
