"""In-memory twin of the registry's control-plane slice, for unit tests of the logic above it."""

from __future__ import annotations

from collections import defaultdict


class InMemoryRegistry:
    """Aliases and tags in dictionaries; behaves like :class:`modelcanary.registry.Registry`."""

    def __init__(self) -> None:
        self.aliases: dict[str, dict[str, str]] = defaultdict(dict)
        self.tags: dict[str, dict[str, str]] = defaultdict(dict)
        self.versions: dict[tuple[str, str], dict[str, str]] = defaultdict(dict)

    def alias_version(self, name: str, alias: str) -> str | None:
        return self.aliases[name].get(alias)

    def set_alias(self, name: str, alias: str, version: str) -> None:
        self.aliases[name][alias] = str(version)

    def delete_alias(self, name: str, alias: str) -> None:
        self.aliases[name].pop(alias, None)

    def list_models(self) -> list[str]:
        return sorted(
            name
            for name in set(self.tags) | set(self.aliases)
            if self.tags[name] or self.aliases[name]
        )

    def models_tagged(self, tag: str) -> dict[str, str]:
        return {name: tags[tag] for name, tags in self.tags.items() if tag in tags}

    def model_tags(self, name: str) -> dict[str, str]:
        return dict(self.tags[name])

    def aliases_and_tags(self, name: str) -> tuple[dict[str, str], dict[str, str]]:
        return dict(self.aliases[name]), dict(self.tags[name])

    def set_model_tags(self, name: str, tags: dict[str, str]) -> None:
        self.tags[name].update(tags)

    def version_tags(self, name: str, version: str) -> dict[str, str]:
        return dict(self.versions[(name, str(version))])

    def set_version_tags(self, name: str, version: str, tags: dict[str, str]) -> None:
        self.versions[(name, str(version))].update(tags)
