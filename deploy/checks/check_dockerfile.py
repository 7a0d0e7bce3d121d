"""Checks a Dockerfile without building it (scripts/check-deploy.sh runs this).

Usage: python deploy/checks/check_dockerfile.py DOCKERFILE (from the repository root, the build
context). Parses with BuildKit's own parser (PyPI `dockerfile`), then checks that every
`COPY --from` names an earlier stage, every COPY source exists in the context and is
not excluded by DOCKERFILE.dockerignore, and every `cargo build -p` names a workspace
package. Prints the packages of every `apt-get install`, one a line, for the caller
to look up in Debian; problems go to stderr, and the exit status is 1 if any.
"""

import fnmatch
import pathlib
import re
import shlex
import sys
import tomllib

import dockerfile


def ignore_patterns(path):
    ignore_file = path.with_name(path.name + ".dockerignore")
    if not ignore_file.exists():
        return []
    lines = (line.strip() for line in ignore_file.read_text().splitlines())
    return [line for line in lines if line and not line.startswith("#")]


def workspace_packages():
    members = tomllib.loads(pathlib.Path("Cargo.toml").read_text())["workspace"]["members"]
    return {
        tomllib.loads((pathlib.Path(member) / "Cargo.toml").read_text())["package"]["name"]
        for member in members
    }


def is_ignored(source, patterns):
    return any(
        fnmatch.fnmatch(source, pattern) or source.startswith(pattern.rstrip("/") + "/")
        for pattern in patterns
    )


def main():
    path = pathlib.Path(sys.argv[1])
    patterns = ignore_patterns(path)
    packages = workspace_packages()
    errors, stages, apt = [], [], []
    for command in dockerfile.parse_file(str(path)):
        where = f"{path}:{command.start_line}"
        if command.cmd == "FROM":
            value = [word.lower() for word in command.value]
            stages.append(value[2] if len(value) == 3 and value[1] == "as" else None)
        elif command.cmd in ("COPY", "ADD"):
            stage = [flag.split("=", 1)[1] for flag in command.flags if flag.startswith("--from=")]
            if stage:
                if stage[0] not in stages[:-1]:
                    errors.append(f"{where}: --from={stage[0]} is no earlier stage")
                continue
            for source in command.value[:-1]:
                if source != "." and not pathlib.Path(source).exists():
                    errors.append(f"{where}: {source} is not in the build context")
                if is_ignored(source, patterns):
                    errors.append(f"{where}: {source} is excluded by the .dockerignore")
        elif command.cmd == "RUN":
            text = " ".join(command.value)
            cargo_builds = " ".join(re.findall(r"cargo build ([^&]*)", text))
            for name in re.findall(r"(?:^|\s)-p\s+(\S+)", cargo_builds):
                if name not in packages:
                    errors.append(f"{where}: cargo -p {name}: no such workspace package")
            for words in re.findall(r"apt-get install ([^&]*)", text):
                apt += [word for word in shlex.split(words) if not word.startswith("-")]
    if not apt:
        errors.append(f"{path}: no apt-get install found")
    for error in errors:
        print(error, file=sys.stderr)
    print("\n".join(apt))
    return 1 if errors else 0


if __name__ == "__main__":
    sys.exit(main())
