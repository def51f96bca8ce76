"""The built-in plugins; each registers through the mindplug.plugins entry point group."""
