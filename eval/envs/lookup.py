"""Knowledge work: multi-step lookups and arithmetic over a small staff database, by tool calls.

A task (from a seed) asks for the total age of a person and her first k - 1 bosses up the chain,
k = d + 1 people in all. The database is reached only through tools (`TOOLS`, OpenAI-style schemas):
`lookup(name, field)` with field `boss` or `age`, `add(a, b)`, and `answer(value)`, which ends the
episode. Success is answering the exact total.

Actions are tool calls {"name": ..., "arguments": {...}}. For constrained decoding,
`valid_actions()` lists the useful calls as compact JSON strings, `action_string(call)`, e.g.
`{"name":"lookup","arguments":{"name":"ann","field":"age"}}`; `step` accepts the dict or its JSON
string (`parse_action` maps one to the other). The list holds lookups of names already seen,
additions onto the running total, and answers with numbers already seen; `step` also executes any
other well-formed call, so a free-text policy is not confined to the list.
"""
from __future__ import annotations

import copy
import json
import random
from typing import Any

from eval.envs.base import Env, StepResult, Suite

NAMES = ["ann", "bob", "cy", "dee", "eve", "fay", "gus", "hal", "ivy", "jon", "kim", "lou", "max",
         "ned", "ola", "pat", "rex", "sal", "tom", "uma", "vic", "wes", "yan", "zed"]
FIELDS = ("boss", "age")
N_DISTRACTORS = 3
SECONDS = {"lookup": 30.0, "add": 10.0, "answer": 30.0}  # simulated time per tool call

TOOLS: list[dict[str, Any]] = [
    {"type": "function", "function": {
        "name": "lookup", "description": "Read one field of a person's record in the staff database.",
        "parameters": {"type": "object", "properties": {
            "name": {"type": "string", "description": "person's name"},
            "field": {"type": "string", "enum": list(FIELDS)}}, "required": ["name", "field"]}}},
    {"type": "function", "function": {
        "name": "add", "description": "Add two whole numbers.",
        "parameters": {"type": "object", "properties": {"a": {"type": "integer"}, "b": {"type": "integer"}},
                       "required": ["a", "b"]}}},
    {"type": "function", "function": {
        "name": "answer", "description": "Give the final answer; ends the task.",
        "parameters": {"type": "object", "properties": {"value": {"type": "integer"}}, "required": ["value"]}}},
]


def action_string(call: dict[str, Any]) -> str:
    """The JSON string of a tool call, as listed by `valid_actions()`."""
    return json.dumps({"name": call["name"], "arguments": call.get("arguments", {})}, separators=(",", ":"))


def parse_action(action: str | dict[str, Any]) -> dict[str, Any] | None:
    """A tool call dict from a dict or its JSON string; None when it is not a well-formed call."""
    if isinstance(action, str):
        try:
            action = json.loads(action)
        except json.JSONDecodeError:
            return None
    if not isinstance(action, dict) or not isinstance(action.get("name"), str):
        return None
    args = action.get("arguments", {})
    if isinstance(args, str):  # OpenAI wire format carries arguments as a JSON string
        try:
            args = json.loads(args)
        except json.JSONDecodeError:
            return None
    return {"name": action["name"], "arguments": args} if isinstance(args, dict) else None


def _call(tool: str, /, **arguments: Any) -> dict[str, Any]:
    return {"name": tool, "arguments": arguments}


class LookupEnv(Env):
    suite = "lookup"
    category = "knowledge"
    system_prompt = "Answer the question using the tools: lookup(name, field), add(a, b), answer(value)."
    tools = TOOLS

    def reset(self, seed: int) -> str:
        rng = random.Random(f"lookup-{self.difficulty}-{seed}")
        self.k = self.difficulty + 1
        people = rng.sample(NAMES, self.k + N_DISTRACTORS)
        self.chain = people[:self.k]
        self.records = {p: {"age": rng.randint(20, 69)} for p in people}
        for boss_of, p in zip(self.chain[1:], self.chain):
            self.records[p]["boss"] = boss_of
        for p in people[self.k - 1:]:  # top of the chain and distractors report to a distractor
            self.records[p]["boss"] = rng.choice([q for q in people[self.k:] if q != p])
        self.total = sum(self.records[p]["age"] for p in self.chain)
        self.known_names = [self.chain[0]]
        self.done_lookups: set[tuple[str, str]] = set()
        self.ages: dict[str, int] = {}  # name -> age, as looked up
        self.running: tuple[int, frozenset] | None = None  # last sum and the names whose ages it holds
        self.answered: int | None = None
        self.steps = 0
        bosses = "her boss" if self.k == 2 else f"her first {self.k - 1} bosses up the chain"
        return f"What is the total age of {self.chain[0]} and {bosses} ({self.k} people)?"

    @property
    def max_steps(self) -> int:
        return 3 * (3 * self.k - 1) + 10

    def valid_actions(self) -> list[str]:
        calls = [_call("lookup", name=n, field=f) for n in self.known_names for f in FIELDS
                 if (n, f) not in self.done_lookups]
        if self.running is None:
            names = list(self.ages)
            calls += [_call("add", a=self.ages[names[0]], b=self.ages[n]) for n in names[1:]]
        else:
            total, inside = self.running
            calls += [_call("add", a=total, b=age) for n, age in self.ages.items() if n not in inside]
        numbers = list(dict.fromkeys(list(self.ages.values()) + ([self.running[0]] if self.running else [])))
        calls += [_call("answer", value=v) for v in numbers]
        return [action_string(c) for c in calls]

    def step(self, action) -> StepResult:
        self.steps += 1
        call = parse_action(action)
        if call is None:
            obs, seconds = f"not a tool call: {action!r}.", 0.0
        else:
            obs, seconds = self._execute(call["name"], call["arguments"])
        done = self.answered is not None or self.steps >= self.max_steps
        return StepResult(obs, 1.0 if self.answered == self.total else 0.0, done, seconds)

    def _execute(self, name: str, args: dict[str, Any]) -> tuple[str, float]:
        try:
            if name == "lookup":
                return self._lookup(str(args["name"]), str(args["field"])), SECONDS[name]
            if name == "add":
                return self._add(int(args["a"]), int(args["b"])), SECONDS[name]
            if name == "answer":
                self.answered = int(args["value"])
                return ("correct." if self.answered == self.total else "wrong."), SECONDS[name]
        except (KeyError, TypeError, ValueError) as e:
            return f"bad arguments for {name}: {e!r}.", 0.0
        return f"unknown tool {name!r}; tools: lookup, add, answer.", 0.0

    def _lookup(self, person: str, field: str) -> str:
        if person not in self.records or field not in FIELDS:
            return f"no record for {person}.{field}."
        value = self.records[person][field]
        self.done_lookups.add((person, field))
        if field == "boss" and value not in self.known_names:
            self.known_names.append(value)
        if field == "age":
            self.ages.setdefault(person, value)
        return f"{person}.{field} = {value}"

    def _add(self, a: int, b: int) -> str:
        result = a + b
        self.running = self._track_sum(a, b, result)
        return f"{a} + {b} = {result}"

    def _track_sum(self, a: int, b: int, result: int) -> tuple[int, frozenset] | None:
        """The running total (offered by `valid_actions`) grows when an age not yet inside it is added."""
        if self.running is not None and self.running[0] == a:
            inside = self.running[1]
        else:
            first = next((n for n, v in self.ages.items() if v == a), None)
            if first is None:
                return self.running
            inside = frozenset({first})
        new = next((n for n, v in self.ages.items() if v == b and n not in inside), None)
        return self.running if new is None else (result, inside | {new})

    def outcome(self) -> tuple[bool, float]:
        ok = self.answered == self.total
        return ok, 1.0 if ok else 0.0


def solve(env: LookupEnv) -> list[dict[str, Any]]:
    """Age and boss of each person up the chain, adding each age onto the running total."""
    sim = copy.deepcopy(env)
    actions: list[dict[str, Any]] = []
    total = None
    person = sim.chain[0]
    for i in range(sim.k):
        actions.append(_call("lookup", name=person, field="age"))
        age = sim.records[person]["age"]
        if total is None:
            total = age
        else:
            actions.append(_call("add", a=total, b=age))
            total += age
        if i < sim.k - 1:
            actions.append(_call("lookup", name=person, field="boss"))
            person = sim.records[person]["boss"]
    actions.append(_call("answer", value=total))
    return actions


SUITE = Suite(name="lookup", category="knowledge", make_env=LookupEnv, solve=solve, default_difficulty=1)
