"""The admission webhook: the injection core's second shell, and what installs it."""
