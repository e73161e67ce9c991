"""torch.hub entry points: ``torch.hub.load(REPO_DIR, "yynet_small_64", source="local")``.

One entry per preset; each takes ``yyfast.create_model``'s arguments (``pretrained=`` a
``save_pretrained`` folder or a Hugging Face Hub repo id, ``backend=``, options such as
``num_classes=``). yyfast publishes no weights, so ``pretrained=True`` is refused.
"""
dependencies = ["torch"]

import yyfast as _yyfast  # noqa: E402  (torch.hub reads `dependencies` first)


def _entry(name):
    def entry(pretrained=None, **kwargs):
        return _yyfast.create_model(name, pretrained=pretrained, **kwargs)

    entry.__name__ = entry.__qualname__ = name
    entry.__doc__ = (f"{name}: yyfast.create_model({name!r}, pretrained=None, backend='auto', **options); "
                     "pretrained: a save_pretrained folder or a Hugging Face Hub repo id.")
    return entry


for _name in _yyfast.list_models():
    globals()[_name] = _entry(_name)
