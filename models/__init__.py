"""The networks: every backbone registers itself by name (models/registry.py); `--arch NAME`
looks it up. A network is built from its typed config, without any parser:

    from models.registry import InputSpec, backbone
    entry = backbone("msdnet_ge")
    network = entry.build(entry.configure({**defaults, "nBlocks": 5}, InputSpec(32, 100)))

(docs/extending.md shows that and how to add a backbone or an objective).
"""
