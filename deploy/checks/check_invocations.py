"""Checks that every way deploy/ runs a Strata program passes only flags it has
(scripts/check-deploy.sh runs this from the repository root, with PyYAML).

The flags come from the source, not from a built binary (which may be stale): every
`#[arg(long ...)]` field of the binary's `main.rs` and `config.rs` is the flag
`--field-name`, as clap derives it (and strata-wait-healthy's modes are its
`--name)` cases). The invocations are the systemd units' `Exec*=`
lines, the compose services' `command:` and healthcheck `test:`, and the Kubernetes
containers' and probes' `command:` and `args:`, including `bash -c "exec BINARY ..."` strings. Prints one line per unknown
flag and exits 1 if any; exits 1 too if no invocation of a binary is found.
"""

import pathlib
import re
import shlex
import sys

import yaml

SOURCES = {
    "safekeeper": ["safekeeper/src/main.rs", "safekeeper/src/config.rs"],
    "pageserver": ["pageserver/src/main.rs", "pageserver/src/config.rs"],
    "compute_ctl": ["crates/compute_ctl/src/main.rs"],
    "strata-wait-healthy": ["deploy/systemd/strata-wait-healthy"],
}
# Flags clap adds by itself.
BUILTIN = {"--help", "--version"}


def source_flags(paths):
    flags = set(BUILTIN)
    for path in paths:
        text = pathlib.Path(path).read_text()
        if not path.endswith(".rs"):
            # strata-wait-healthy: its modes are the `--name)` cases.
            flags.update(re.findall(r"^\s*(--[a-z-]+)\)", text, re.M))
            continue
        for field in re.findall(r"#\[arg\(\s*long[^\]]*\]\s*(?:///[^\n]*\s*)*(?:pub\s+)?(\w+):", text):
            flags.add("--" + field.replace("_", "-"))
    return flags


def systemd_invocations():
    for unit in sorted(pathlib.Path("deploy/systemd").glob("*.service")):
        text = unit.read_text().replace("\\\n", " ")
        for line in re.findall(r"^Exec\w*=(.*)$", text, re.M):
            yield str(unit), shlex.split(line)


def yaml_commands(node):
    """Every command line in a YAML document: lists of strings under command/args."""
    if isinstance(node, dict):
        argv = list(node.get("command") or []) + list(node.get("args") or [])
        if argv and all(isinstance(word, str) for word in argv):
            yield argv
        test = node.get("test")  # a compose healthcheck: ["CMD", argv...]
        if isinstance(test, list) and test[:1] == ["CMD"]:
            yield test[1:]
        for value in node.values():
            yield from yaml_commands(value)
    elif isinstance(node, list):
        for value in node:
            yield from yaml_commands(value)


def yaml_invocations():
    files = sorted(pathlib.Path("deploy/kubernetes").rglob("*.yaml"))
    files += sorted(pathlib.Path("deploy/compose").glob("*.yaml"))
    for path in files:
        for document in yaml.safe_load_all(path.read_text()):
            for argv in yaml_commands(document):
                # bash -c "...exec BINARY ...": the script's own words.
                if len(argv) >= 3 and argv[0].endswith("sh") and argv[1] == "-c":
                    argv = shlex.split(argv[2].split("exec ", 1)[-1])
                yield str(path), argv


def main():
    flags = {name: source_flags(paths) for name, paths in SOURCES.items()}
    seen = {name: 0 for name in SOURCES}
    errors = []
    for where, argv in [*systemd_invocations(), *yaml_invocations()]:
        for i, word in enumerate(argv):
            binary = pathlib.PurePath(word).name
            if binary not in flags:
                continue
            seen[binary] += 1
            for arg in argv[i + 1:]:
                flag = arg.split("=", 1)[0]
                if flag.startswith("--") and flag not in flags[binary]:
                    errors.append(f"{where}: {binary} has no flag {flag}")
            break
    for binary, count in seen.items():
        if not count:
            errors.append(f"no invocation of {binary} found under deploy/")
    for error in errors:
        print(error)
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
