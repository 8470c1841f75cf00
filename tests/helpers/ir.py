"""Walking a compiled pipeline (KFP IR) the way the compile tests look at it."""


def tasks(ir: dict, dag: dict | None = None, conditions: tuple = ()):
    """(component name, task spec, enclosing dsl.If conditions) of every container task, recursively."""
    dag = dag if dag is not None else ir["root"]["dag"]
    for spec in dag["tasks"].values():
        component = spec["componentRef"]["name"]
        inner = ir["components"][component]
        condition = spec.get("triggerPolicy", {}).get("condition")
        if "dag" in inner:
            yield from tasks(ir, inner["dag"], conditions + ((condition,) if condition else ()))
        else:
            yield component.removeprefix("comp-"), spec, conditions


def base(component: str) -> str:
    """`evaluate-model-2` -> `evaluate-model`."""
    head, _, tail = component.rpartition("-")
    return head if tail.isdigit() else component
