"""Pure-Python twins of fastws_ext: the readable reference and the test oracle.

Each module here has the same API and behaviour as the Cython module of the
same name in fastws_ext (see the .pyi stubs there).
See docs/design/codec.md#two-implementations-one-behaviour.
"""
