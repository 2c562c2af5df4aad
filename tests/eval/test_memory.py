"""The gradient-free memory (eval/memory.py) on its own: what an episode becomes in memory, what
retrieval returns (similar first, same suite, never the same task, within k and the token budget),
and how a memory policy puts it in the prompt while the logged episode stays what the environment
said."""
import numpy as np

from data_pipeline.schema import Message, Outcome, ToolCall, Trajectory
from eval.memory import HEADER, ExperienceMemory, MemoryPolicy, failure_note, words, worked_example
from eval.rollout import RandomPolicy, run_episodes
from eval.suites import get_suite


def traj(task_id, first, actions, success, suite="maze", score=None, observations=None):
    msgs = [Message(role="system", content="Reach the goal."), Message(role="user", content=first)]
    for i, a in enumerate(actions):
        msgs.append(Message(role="assistant", content=a))
        msgs.append(Message(role="user", content=(observations or {}).get(i, f"obs {i}")))
    outcome = None if success is None else Outcome(success=success, score=score if score is not None else float(success))
    return Trajectory(episode_id=f"ep-{task_id}", task_id=task_id, suite=suite, messages=msgs, outcome=outcome)


def test_a_success_is_a_worked_example_and_a_failure_a_note_of_where_it_went_wrong():
    ok = traj("maze/d3/s1", "goal: 2 down. open: down", ["down", "down"], True)
    text = worked_example(ok)
    assert text.startswith("SOLVED in 2 steps") and '"goal: 2 down. open: down"' in text and "Actions: down, down." in text
    bad = traj("maze/d3/s2", "goal: 1 left. open: left right", ["left", "right", "left", "right", "up"], False,
               observations={4: "invalid move 'up'. goal: 1 left. open: left right"})
    note = failure_note(bad)
    assert note.startswith("FAILED after 5 steps")
    assert "back and forth 2 times" in note and "1 of its actions were invalid" in note
    assert "Most used: left x2, right x2" in note and "Last actions: left, right, up" in note
    assert "Last observation: \"invalid move 'up'" in note


def test_tool_calls_are_shown_as_calls():
    t = traj("lookup/d1/s1", "find the capital", [], True, suite="lookup")
    t.messages.append(Message(role="assistant", content="", tool_calls=[ToolCall(name="search", arguments={"q": "x"})]))
    assert 'search({"q": "x"})' in worked_example(t)


def test_retrieval_ranks_by_task_text_within_the_suite_and_never_returns_the_same_task():
    pool = [traj("maze/d3/s1", "goal: 3 up 2 left. open: up", ["up"], True),
            traj("maze/d3/s2", "goal: 1 down 4 right. open: right", ["right"], False),
            traj("maze/d3/s3", "goal: 3 up 1 left. open: up left", ["up"], True),
            traj("other/d1/s4", "goal: 3 up 2 left. open: up", ["x"], True, suite="other"),
            traj("maze/d3/s5", "goal: 3 up 2 left. open: up", ["up"], None)]  # no outcome: not in memory
    mem = ExperienceMemory(pool, k=2, max_tokens=1000)
    assert mem.size == 4  # the unlabeled one is neither an example nor a failure
    got = mem.recall("maze", "goal: 3 up 2 left. open: up left")
    assert [e.task_id for e in got.entries] == ["maze/d3/s1", "maze/d3/s3"]
    assert got.tokens > 0 and got.block().startswith(HEADER) and "[2] SOLVED" in got.block()
    # the task itself is never its own example; other suites never come back
    again = mem.recall("maze", "goal: 3 up 2 left. open: up", task_id="maze/d3/s1")
    assert "maze/d3/s1" not in [e.task_id for e in again.entries]
    assert all(e.suite == "maze" for e in mem.recall("maze", "anything at all", None).entries)
    assert mem.recall("unknown-suite", "goal").entries == []


def test_ties_go_to_the_newer_episode_and_the_budget_is_kept():
    pool = [traj(f"maze/d3/s{i}", "goal: 2 down. open: down", ["down"] * (1 + 30 * (i == 2)), True) for i in range(4)]
    mem = ExperienceMemory(pool, k=3, max_tokens=10_000)
    assert [e.task_id for e in mem.recall("maze", "goal: 2 down. open: down").entries] == \
        ["maze/d3/s3", "maze/d3/s2", "maze/d3/s1"]
    # a tight budget skips the long one (s2, 31 actions) for shorter, older ones
    short = ExperienceMemory(pool, k=3, max_tokens=60)
    got = short.recall("maze", "goal: 2 down. open: down")
    assert "maze/d3/s2" not in [e.task_id for e in got.entries] and got.entries
    assert got.tokens <= 60 and got.tokens == len(HEADER.split()) + sum(e.tokens + 2 for e in got.entries)


def test_words_keep_numbers():
    assert words("Goal: 2 down, 10 right.") == ["goal", "2", "down", "10", "right"]


class Recording(RandomPolicy):
    """Uniform over valid actions; remembers every prompt it was shown."""

    def __init__(self):
        self.seen = []

    def act(self, conversations, valid_actions, rngs):
        self.seen.extend([list(c) for c in conversations])
        return super().act(conversations, valid_actions, rngs)


def test_a_memory_policy_prompts_with_the_block_and_logs_the_plain_episode():
    suite = get_suite("maze")
    past = run_episodes(suite, 3, list(range(12)), RandomPolicy(), batch_size=12, rng_seed=1, progress=False)
    inner = Recording()
    policy = MemoryPolicy(inner, ExperienceMemory(past, k=2, max_tokens=400))
    trajs = run_episodes(suite, 3, [100, 101, 102], policy, batch_size=3, rng_seed=2, progress=False)
    for t in trajs:
        mem = t.metadata["memory"]
        assert 1 <= len(mem["episodes"]) <= 2 and set(mem["task_ids"]) <= {p.task_id for p in past}
        assert mem["prompt_tokens"] == mem["tokens"] * t.metadata["steps"]
        assert all(HEADER not in (m.content or "") for m in t.messages)  # the store never sees the block
    # every prompt the model saw carried the block at the end of the system prompt, and the rest of
    # the chat as the episode had it
    assert inner.seen and all(c[0]["role"] == "system" and HEADER in c[0]["content"] for c in inner.seen)
    assert all(c[0]["content"].startswith(suite.make_env(3).system_prompt) for c in inner.seen)
    longest = max(inner.seen, key=len)
    t = next(t for t in trajs if len(t.messages) >= len(longest))
    assert [m["content"] for m in longest[1:]] == [m.content for m in t.messages[1:len(longest)]]
    stats = policy.stats()
    assert stats["episodes"] == 3 and stats["with_memory"] == 3 and stats["library"] == 12
    assert np.isclose(stats["mean_prompt_tokens"], np.mean([t.metadata["memory"]["prompt_tokens"] for t in trajs]))


def test_an_empty_memory_changes_nothing():
    suite = get_suite("maze")
    plain = run_episodes(suite, 3, [5, 6], RandomPolicy(), batch_size=2, rng_seed=3, progress=False)
    inner = Recording()
    with_empty = run_episodes(suite, 3, [5, 6], MemoryPolicy(inner, ExperienceMemory([])), batch_size=2, rng_seed=3,
                              progress=False)
    assert [[m.content for m in t.messages] for t in plain] == [[m.content for m in t.messages] for t in with_empty]
    assert all(HEADER not in c[0]["content"] for c in inner.seen)
