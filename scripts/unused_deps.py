#!/usr/bin/env python3
"""Fails when a crate declares a dependency its code never names.

A small, honest stand-in for `cargo machete` (which would need a
`cargo install` in CI): for every manifest in the workspace and every entry
of `[dependencies]`, `[dev-dependencies]` and `[build-dependencies]`, it
looks for the crate's name used as code -- `name::`, `use name`,
`extern crate name`, `name!` -- outside `//` comments, in the files that
section can reach (`src/` and `build.rs` for normal dependencies; also
`tests/`, `benches/` and `examples/` for dev-dependencies; `build.rs` for
build dependencies). A dev-dependency declared exactly like a normal one
(same spelling, no extra features) is flagged as redundant, and so is a
`[workspace.dependencies]` entry no crate uses. Like machete it is a text search, so a dependency only
generated code names (tonic-prost in the `build.rs` output) is listed under
`[package.metadata.cargo-machete] ignored = [...]` in its manifest, the same
key machete reads.
"""

import pathlib
import re
import sys
import tomllib

ROOT = pathlib.Path(__file__).resolve().parent.parent

SECTIONS = {
    "dependencies": ["src", "build.rs"],
    "dev-dependencies": ["src", "build.rs", "tests", "benches", "examples"],
    "build-dependencies": ["build.rs"],
}


def sources(crate_dir: pathlib.Path, places: list[str]) -> list[str]:
    texts = []
    for place in places:
        path = crate_dir / place
        files = [path] if path.is_file() else sorted(path.rglob("*.rs")) if path.is_dir() else []
        for file in files:
            text = file.read_text(encoding="utf-8")
            texts.append("\n".join(line for line in text.splitlines() if not line.lstrip().startswith("//")))
    return texts


def used(ident: str, texts: list[str]) -> bool:
    name = re.escape(ident)
    pattern = re.compile(rf"(?<![\w:]){name}\s*::|\buse\s+{name}\b|\bextern\s+crate\s+{name}\b|(?<![\w:]){name}!")
    return any(pattern.search(text) for text in texts)


def main() -> int:
    manifests = [ROOT / "Cargo.toml", *sorted(ROOT.glob("crates/*/Cargo.toml"))]
    unused = []
    for manifest in manifests:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
        ignored = set(data.get("package", {}).get("metadata", {}).get("cargo-machete", {}).get("ignored", []))
        normal = data.get("dependencies", {})
        for name, spec in data.get("dev-dependencies", {}).items():
            if name in normal and spec == normal[name]:
                unused.append(f"  {manifest.relative_to(ROOT)} [dev-dependencies] {name} (already a normal dependency)")
        for section, places in SECTIONS.items():
            texts = sources(manifest.parent, places)
            for name in data.get(section, {}):
                if name in ignored:
                    continue
                if not used(name.replace("-", "_"), texts):
                    unused.append(f"  {manifest.relative_to(ROOT)} [{section}] {name}")
    workspace = tomllib.loads((ROOT / "Cargo.toml").read_text(encoding="utf-8")).get("workspace", {})
    declared = set()
    for manifest in manifests:
        data = tomllib.loads(manifest.read_text(encoding="utf-8"))
        for section in SECTIONS:
            declared.update(data.get(section, {}))
    for name in workspace.get("dependencies", {}):
        if name not in declared:
            unused.append(f"  Cargo.toml [workspace.dependencies] {name} (no crate uses it)")
    if unused:
        print("unused or redundant dependencies (remove them; list ones only generated code")
        print("names under [package.metadata.cargo-machete] ignored):")
        print("\n".join(unused))
        return 1
    print(f"every dependency of {len(manifests)} manifests is named in code")
    return 0


if __name__ == "__main__":
    sys.exit(main())
