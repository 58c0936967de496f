"""The ring underneath: :mod:`cicada.chordlib.routing` has :class:`Hash`."""
