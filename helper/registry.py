"""Named registries of classes (``--distill`` methods, online methods): one way to register a class under
its names and to look a name up, in any case, with one line that suggests the closest names when it is
unknown. Both the single-run scripts and a pack's members resolve names here, so they accept the same
spellings.
"""
import difflib

from helper.errors import KDZooError


class Registry(dict):
    """``{name: class}`` with a decorator that fills it and a forgiving lookup.

    ``what`` names the flag in messages ('--distill'); ``aliases`` maps other projects' spellings (lower
    case) to registered names (mdistiller's 'hint' for 'fitnet').
    """

    def __init__(self, what, aliases=None):
        super().__init__()
        self.what = what
        self.aliases = dict(aliases or {})

    def register(self, *names):
        """Class decorator: make a class selectable by ``names`` (the first is canonical, set as ``cls.name``)."""
        def add(cls):
            for name in names:
                if name in self:
                    raise ValueError(f"{self.what} name '{name}' registered twice")
                self[name] = cls
            cls.name = names[0]
            return cls
        return add

    def lookup(self, name, flag=None):
        """The registered name for ``name`` in any case (mdistiller's configs spell them 'KD', 'DKD'), or a
        ``KDZooError`` of one line suggesting the closest names."""
        if name in self:
            return name
        folded = {key.lower(): key for key in self}
        folded.update(self.aliases)
        if name.lower() in folded:
            return folded[name.lower()]
        close = difflib.get_close_matches(name.lower(), sorted(folded), n=3, cutoff=0.6)
        hint = f" (did you mean {' or '.join(dict.fromkeys(folded[c] for c in close))}?)" if close else ''
        raise KDZooError(f"unknown {flag or self.what} '{name}'{hint}; known: {', '.join(sorted(self))}")

    def get_class(self, name, flag=None):
        """The class registered for ``name`` (any spelling ``lookup`` accepts)."""
        return self[self.lookup(name, flag)]
