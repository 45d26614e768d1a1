"""The version of tudui, in a module that imports nothing, so every other module may import it."""
__version__ = "0.1.0"
