"""The package's import graph, read from the code with `ast` (function-level imports included), and
the rules it must keep:

- imports run one way, down the layers (`LAYERS`): a module imports its own layer or those below it;
- no cycle, not even one through a function-level import;
- TensorFlow (and Keras, tf2onnx) is imported only inside `pipeline.tf_side`, no module outside it
  imports one inside it, and nothing in it reaches torch, onnx2torch, torchvision or ONNX Runtime:
  the two must never share a process (../shared/NOTES.md);
- only `pipeline.__main__` and `pipeline.api` (the same program, called from Python) import the command line.

`python -m pipeline.common.import_graph check` prints every breach (exit 1 if any); `... make` prints
each stage's true prerequisites — the files its module reaches, the TensorFlow process it launches
included — as Make variables, which the Makefile includes. Standard library only: it runs before
`make install`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

from pipeline.common.keras_job import WORKER_MODULE

PACKAGE = "pipeline"
TF_SIDE = WORKER_MODULE  # the fenced subpackage is the one the launcher runs
CLI = f"{PACKAGE}.cli"
ENTRY = f"{PACKAGE}.__main__"
CLI_CALLERS = (ENTRY, f"{PACKAGE}.api")  # the modules that may import the command line
# The module that starts the TensorFlow process (`runtimes.keras`): whatever reaches it depends on the
# worker's code too, though no import says so.
LAUNCHER = f"{PACKAGE}.runtimes.keras"
WORKER_ENTRY = f"{TF_SIDE}.__main__"
# The layers, bottom first; a module may import from its own layer and those below. The TensorFlow
# process sits beside the verifier: it uses the leaves and the pure-ONNX converters, nothing above.
LAYERS = (("common",), ("data", "keras_file"), ("runtimes",), ("converters", "native"), ("verifier", "tf_side", "fuzz"), ("stages",),
          ("cli",), ("api",), ("__main__",))
TF_LIBRARIES = frozenset({"tensorflow", "keras", "tf_keras", "tf2onnx"})
TORCH_LIBRARIES = frozenset({"torch", "torchvision", "onnx2torch", "onnxruntime"})
# Each stage target of the Makefile and the module behind it.
STAGES = {"onnx": "stages.to_onnx", "torch": "stages.to_torch", "native": "stages.native", "verify": "stages.verify",
          "evaluate": "stages.evaluate", "bench": "stages.bench"}


class ImportGraph:
    """{module: the package's modules it imports} and {module: the outside libraries it imports}."""

    def __init__(self, root: Path, package: str = PACKAGE):
        """`root` is the folder holding the package folder `package`."""
        self.root = Path(root)
        self.package = package
        self.files = {self._name(path): path for path in sorted((self.root / package).rglob("*.py"))}
        self.imports: dict[str, set[str]] = {}
        self.libraries: dict[str, set[str]] = {}
        for module, path in self.files.items():
            self.imports[module], self.libraries[module] = self._read(module, path)

    def _name(self, path: Path) -> str:
        parts = list(path.relative_to(self.root).with_suffix("").parts)
        return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)

    def _resolve(self, name: str) -> str | None:
        """`name` if it is a module of the package, else its longest prefix that is; None outside the package."""
        while name and name not in self.files:
            name = name.rpartition(".")[0]
        return name or None

    def _read(self, module: str, path: Path) -> tuple[set[str], set[str]]:
        """The package's modules and the outside libraries that `module` imports, anywhere in its code."""
        own, outside = set(), set()
        package_of = module if path.name == "__init__.py" else module.rpartition(".")[0]
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                names = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:  # relative: from the module's own package, `level - 1` packages up
                    anchor = package_of.split(".")[: len(package_of.split(".")) - (node.level - 1)]
                    base = ".".join(anchor + ([base] if base else []))
                # `from a.b import c` imports module a.b.c if there is one, else a name of a.b
                names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in self.files else base for alias in node.names]
            else:
                continue
            for name in names:
                if name == self.package or name.startswith(self.package + "."):
                    target = self._resolve(name)
                    # Importing a.b.c runs a/b/__init__.py first: each package on the way is imported too.
                    while target and target != self.package:
                        if target != module:
                            own.add(target)
                        target = target.rpartition(".")[0]
                elif name:
                    outside.add(name.split(".")[0])
        own.discard(self.package)  # the top `__init__` holds a docstring and a version: no edge worth drawing
        return own, outside

    def reach(self, module: str, through_launch: bool = False) -> set[str]:
        """Every module `module` imports, directly or not (itself included); with `through_launch`, also
        the TensorFlow process's modules wherever the launcher is reached."""
        seen, todo = set(), [module]
        while todo:
            current = todo.pop()
            if current in seen:
                continue
            seen.add(current)
            todo.extend(self.imports.get(current, ()))
            if through_launch and current == LAUNCHER:
                todo.append(WORKER_ENTRY)
        return seen

    def cycle(self) -> list[str] | None:
        """One import cycle as [a, b, ..., a], or None."""
        state: dict[str, int] = {}  # 1: on the current path, 2: done
        path: list[str] = []

        def visit(module: str) -> list[str] | None:
            state[module] = 1
            path.append(module)
            for target in sorted(self.imports[module]):
                if state.get(target) == 1:
                    return path[path.index(target):] + [target]
                if target not in state:
                    found = visit(target)
                    if found:
                        return found
            path.pop()
            state[module] = 2
            return None

        for module in sorted(self.imports):
            if module not in state:
                found = visit(module)
                if found:
                    return found
        return None

    def layer(self, module: str) -> int | None:
        """The index in `LAYERS` of the subpackage (or top module) `module` belongs to; None for the package itself."""
        parts = module.split(".")
        top = parts[1] if len(parts) > 1 else None
        return next((index for index, names in enumerate(LAYERS) if top in names), None)

    def breaches(self) -> list[str]:
        """Every rule of the module docstring this graph breaks, one line each."""
        found = []
        cycle = self.cycle()
        if cycle:
            found.append("import cycle: " + " -> ".join(cycle))
        tf_fenced = TF_SIDE.replace(PACKAGE, self.package, 1)
        inside = {m for m in self.files if m == tf_fenced or m.startswith(tf_fenced + ".")}
        imports_tf = {m for m in self.files if self.libraries[m] & TF_LIBRARIES}
        reaches_tf = {m for m in self.files if self.reach(m) & imports_tf}
        for module in sorted(self.files):
            for target in sorted(self.imports[module]):
                if module not in inside and (target in inside or target in reaches_tf):
                    found.append(f"{module} imports {target}, which is the TensorFlow side (import it only inside {tf_fenced})")
                if target == CLI and module not in CLI_CALLERS:
                    found.append(f"{module} imports the command line {target} (only {' and '.join(CLI_CALLERS)} may)")
                below, above = self.layer(module), self.layer(target)
                if below is not None and above is not None and above > below:
                    found.append(f"{module} imports {target}, a layer above it ({' · '.join(LAYERS[above])} over {' · '.join(LAYERS[below])})")
            if module in imports_tf and module not in inside:
                found.append(f"{module} imports {', '.join(sorted(self.libraries[module] & TF_LIBRARIES))} outside {tf_fenced}")
            if module in inside:
                torch_side = sorted(lib for m in self.reach(module) for lib in self.libraries[m] & TORCH_LIBRARIES)
                if torch_side:
                    found.append(f"{module} reaches {', '.join(sorted(set(torch_side)))}, which must not share a process with TensorFlow")
        return found

    def make_variables(self) -> str:
        """`CODE_<stage> := files...` for every stage: the stage module's reach, the launched worker's
        included, plus the command line that calls it."""
        lines = []
        for stage, module in STAGES.items():
            modules = self.reach(f"{self.package}.{module}", through_launch=True) | {f"{self.package}.cli", f"{self.package}.__main__"}
            files = sorted(str(self.files[m].relative_to(self.root)) for m in modules if m in self.files)
            lines.append(f"CODE_{stage} := {' '.join(files)}")
        return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    command = argv[0] if argv else "check"
    graph = ImportGraph(Path(argv[1]) if len(argv) > 1 else Path(__file__).resolve().parents[2])
    if command == "make":
        sys.stdout.write(graph.make_variables())
        return 0
    breaches = graph.breaches()
    for line in breaches:
        print(line)
    return 1 if breaches else 0


if __name__ == "__main__":
    sys.exit(main())
