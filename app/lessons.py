"""Guided lessons: short steps that walk a class through one explorer with the live model.

Lessons are data. Each step names an explorer page and the query that sets its view (the page's own
state keys, read by static/js/<view>.js), and says one or two sentences. The teacher may replace the
lesson's example input (a text, a picture, a prompt) once for the whole lesson: a step's parameter
whose value is EXAMPLE receives it. Step URLs carry the lesson's own keys too (`lesson`, `lstep`,
and `example` when it is not the lesson's own), so a URL is still the whole view: a reload, a shared
link and a presenter room (which follows URLs) all land on the same step.

The sentences are plain strings kept here, in one place, for the message catalogue to come."""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from urllib.parse import urlencode

from app.schemas import IMAGE_ID as IMAGE_ID_PATTERN

# Query keys of the lesson panel (static/js/lesson.js); common.js writeState() keeps them.
LESSON_KEY, STEP_KEY, EXAMPLE_KEY = "lesson", "lstep", "example"
EXAMPLE_MAX_CHARS = 1_000  # the longest prompt the diffusion API takes; a lesson's example is short
IMAGE_ID = re.compile(IMAGE_ID_PATTERN)  # what the ViT API takes as a picture


class _Example:
    """The placeholder for the lesson's example input in a step's params."""

    def __repr__(self) -> str:
        return "EXAMPLE"


EXAMPLE = _Example()


@dataclass(frozen=True)
class Step:
    page: str  # an explorer page's path, e.g. "/text/head"
    params: dict  # that page's state keys -> values (EXAMPLE: the lesson's example)
    title: str
    text: str  # one or two sentences for the class


@dataclass(frozen=True)
class Lesson:
    id: str
    family: str  # "text", "vision" or "diffusion"
    title: str
    summary: str
    example: str  # the default example input
    example_kind: str  # "text", "image" (a gallery id) or "prompt": which input edits it
    example_label: str
    steps: list[Step] = field(default_factory=list)

    def params(self, k: int, example: str | None = None) -> dict:
        """Step k's (1-based) page params with the example put in."""
        ex = self.example if example is None else example
        return {key: ex if value is EXAMPLE else value for key, value in self.steps[k - 1].params.items()}

    def check_example(self, example: str) -> None:
        """Raise ValueError saying what is wrong with an example the teacher typed."""
        if not example.strip():
            raise ValueError(f"The lesson's {self.example_label.lower()} is empty.")
        if len(example) > EXAMPLE_MAX_CHARS:
            raise ValueError(f"The lesson's {self.example_label.lower()} has {len(example):,} characters; "
                             f"at most {EXAMPLE_MAX_CHARS:,}.")
        if self.example_kind == "image" and not IMAGE_ID.match(example):
            raise ValueError(f"{example[:80]!r} is not a picture id (a gallery id such as {self.example!r}, or an upload's).")

    def url(self, k: int, example: str | None = None) -> str:
        """Step k's URL: the page, its params, and the lesson's own keys."""
        query = {key: str(value) for key, value in self.params(k, example).items()}
        query[LESSON_KEY] = self.id
        query[STEP_KEY] = str(k)
        if example is not None and example != self.example:
            query[EXAMPLE_KEY] = example
        return f"{self.steps[k - 1].page}?{urlencode(query)}"


GPT2_TEXT = "The animal didn't cross the street because it was too tired"
GPT2_SMALL = "The animal didn't cross the street because it was too small"

GPT2 = Lesson(
    id="gpt2-attention",
    family="text",
    title="How GPT-2 pays attention",
    summary="Attention as a soft lookup; queries, keys and values; scaled dot products; the causal mask; "
    "many heads; positions; the next-token probabilities and temperature; two sentences compared.",
    example=GPT2_TEXT,
    example_kind="text",
    example_label="Text",
    steps=[
        Step("/text/attention", {"text": EXAMPLE, "layer": 1, "head": 0}, "Attention is a soft lookup",
             "Each row is one token asking: which earlier tokens matter to me? Like looking a word up in a "
             "dictionary, but instead of taking one entry it takes a mix of all of them: the row's weights "
             "are between 0 and 1 and add up to 1 (the bars below)."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 3}, "The query",
             "To do the lookup, each token's vector is multiplied by a learned matrix Wq. The result, Q, is "
             "the token's query: what it is looking for."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 4}, "The key",
             "A second matrix, Wk, gives every token a key: what it offers to the queries of others. The "
             "same matrix is used for every token."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 5}, "The value",
             "A third matrix, Wv, gives every token a value: what it passes on when another token attends "
             "to it. Query, key and value are three views of the same token."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 6}, "Scores: query · key",
             "Every query is compared with every key by a dot product. A large score means the key "
             "matches what the query is looking for."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 7}, "Scaled dot product",
             "The scores are divided by the square root of the vector length. Without it, long vectors give "
             "huge scores and the softmax would pick a single token almost every time."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 8}, "The causal mask",
             "GPT-2 writes left to right, so a token may not look at the words after it: every score above "
             "the diagonal is blocked (set to minus infinity) before the softmax."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 9}, "Softmax",
             "Softmax turns each row of scores into weights that are positive and add up to 1, the blocked "
             "ones 0. This is the attention pattern of the first step."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 10}, "The answer of the lookup",
             "Each token's output is the weighted average of the values, using its attention weights: the "
             "soft lookup's answer."),
        Step("/text/head", {"text": EXAMPLE, "layer": 1, "head": 0, "step": 11}, "Many heads",
             "A layer has several heads, each with its own small Wq, Wk and Wv, all working at the same "
             "time. Their answers are put side by side and mixed by one more matrix, Wo."),
        Step("/text/heads", {"text": EXAMPLE}, "Every head of every layer",
             "Here is every head of the model on the same text. Each has learned its own way of looking: "
             "some at the word just before, some at the first word, some spread out."),
        Step("/text/head", {"text": EXAMPLE, "layer": 0, "head": 0, "step": 1}, "Positions",
             "Attention by itself does not know word order. So before the first layer GPT-2 adds a learned "
             "position vector to each token's vector: X here holds the word and its place together."),
        Step("/text/attention", {"text": EXAMPLE, "layer": 0, "head": 0}, "A head that uses position",
             "This head often looks at the token just before: the bright cells just left of the diagonal. "
             "It can only do that because positions were added to the tokens."),
        Step("/text/next", {"text": EXAMPLE, "temperature": 1}, "The next token",
             "After the last layer, the model gives every word in its vocabulary a probability of coming "
             "next. These are the ten most likely; add one to the text to write with the model."),
        Step("/text/next", {"text": EXAMPLE, "temperature": 0.3}, "Low temperature",
             "Dividing the scores by a temperature below 1 makes the likely words even more likely: the "
             "model becomes predictable, and picks nearly the same word every time."),
        Step("/text/next", {"text": EXAMPLE, "temperature": 2}, "High temperature",
             "A temperature above 1 flattens the probabilities: unlikely words get a real chance, so the "
             "writing becomes more surprising, and more often wrong."),
        Step("/text/compare", {"a": GPT2_TEXT, "b": GPT2_SMALL, "layer": 0, "head": 3, "qa": 8, "qb": 8},
             "Two sentences: follow “it”",
             "The two sentences differ only in their last word. “it” comes before that word and cannot "
             "see it (the causal mask), so its attention is the same in both."),
        Step("/text/compare", {"a": GPT2_TEXT, "b": GPT2_SMALL, "layer": 0, "head": 3, "qa": 11, "qb": 11},
             "Two sentences: follow the last word",
             "The last word itself reads the two sentences differently: compare where “tired” and “small” "
             "look. Context changes attention, and so what the model makes of a word."),
    ],
)

VIT = Lesson(
    id="vit-image",
    family="vision",
    title="How a Vision Transformer sees a picture",
    summary="Patches as tokens, the CLS token, position embeddings, attention over the image, attention "
    "rollout, and the class probabilities.",
    example="scene-1",
    example_kind="image",
    example_label="Picture",
    steps=[
        Step("/vision/patches", {"image": EXAMPLE, "patch": 27}, "Patches",
             "A Vision Transformer cuts the picture into a grid of small square patches. Each patch becomes "
             "one token, like a word in a sentence."),
        Step("/vision/patches", {"image": EXAMPLE, "patch": 36}, "From pixels to a vector",
             "A patch's pixels are flattened into one long list of numbers, and a learned matrix turns that "
             "list into the patch's embedding: a vector the Transformer can work with."),
        Step("/vision/heads", {"image": EXAMPLE}, "Position embeddings",
             "The embedding says what a patch shows, not where it is, so a learned position vector is added "
             "to it. Each small map compares one patch's position vector with all the others: nearby patches "
             "came out alike, so the model learned the grid by itself."),
        Step("/vision/attention", {"image": EXAMPLE, "layer": 0, "head": -1, "from": 0}, "The CLS token",
             "Besides the patches there is one extra token, CLS, with no pixels of its own. It collects "
             "information from the patches through attention, and only CLS is used to name the picture."),
        Step("/vision/attention", {"image": EXAMPLE, "layer": 0, "head": -1, "from": 29}, "Attention over the image",
             "Every token may look at every other token, in all directions: there is no causal mask in a "
             "ViT. Here one patch (outlined) is the one looking; click any other patch to follow it."),
        Step("/vision/attention", {"image": EXAMPLE, "layer": 3, "head": -1, "from": 0}, "Where CLS looks at the end",
             "In the last layer, CLS looks mostly at the patches where the shape is: what it gathers there "
             "decides the answer."),
        Step("/vision/rollout", {"image": EXAMPLE, "step": 0, "from": 0}, "Attention rollout: layer 0",
             "One layer's attention is not the whole story, because each layer mixes what the layers before "
             "it mixed. Attention rollout multiplies the layers' attention together: this is after layer 0."),
        Step("/vision/rollout", {"image": EXAMPLE, "step": 3, "from": 0}, "Attention rollout: the last layer",
             "After all the layers, rollout shows which patches of the input finally reach CLS. Move the slider "
             "to watch it build up layer by layer."),
        Step("/vision/prediction", {"image": EXAMPLE}, "Class probabilities",
             "Finally one linear layer turns CLS's vector into a score per class, and softmax turns the "
             "scores into probabilities that add up to 1."),
    ],
)

DIFFUSION = Lesson(
    id="diffusion",
    family="diffusion",
    title="How Stable Diffusion draws from noise",
    summary="The autoencoder's latent space, forward diffusion (adding noise), reverse diffusion (removing "
    "it step by step), cross-attention to the words, and classifier-free guidance.",
    example="a large red star at the top left",
    example_kind="prompt",
    example_label="Prompt",
    steps=[
        Step("/diffusion/forward", {"scene": 0, "t": 0, "seed": 0}, "The latent space",
             "Stable Diffusion does not work on pixels. Its autoencoder squeezes the picture into a much "
             "smaller latent (the small maps under “The latent space”) and decodes it back almost unchanged."),
        Step("/diffusion/forward", {"scene": 0, "t": 300, "seed": 0}, "Forward diffusion",
             "To train the model, random noise is added to the latent. The timestep t says how much: at "
             "t = 300 the picture is still there, under the noise."),
        Step("/diffusion/forward", {"scene": 0, "t": 999, "seed": 0}, "Pure noise",
             "At the last timestep almost nothing of the picture is left. The model learns to undo this, "
             "predicting the noise that was added, one step at a time."),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": 0},
             "Reverse diffusion: the first step",
             "Drawing starts from pure random noise (the seed chooses it); the model predicts the noise in it "
             "and the scheduler removes part of it. x̂₀ is the model's first guess of the clean picture."),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": 5},
             "Reverse diffusion: step by step",
             "Each step removes a little more noise. Use the slider or the arrow keys to go back and forth "
             "through the steps and watch the picture appear."),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1},
             "The last step",
             "After the last step the latent is clean, and the autoencoder decodes it into the final picture."),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1, "word": 3},
             "Cross-attention: where each word lands",
             "The picture reads the prompt through cross-attention: every spot of the latent looks at the "
             "words. The highlighted word's map shows where it is used; hover the other words."),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1,
                                     "cmp": "guidance", "b": 1},
             "Classifier-free guidance",
             "At every step the model predicts the noise twice, with the prompt and without it, and pushes "
             "further in the prompt's direction by the guidance scale. A uses 5; B uses 1, no extra push."),
        Step("/diffusion/generate", {"prompt": EXAMPLE, "seed": 0, "steps": 20, "guidance": 5, "step": -1,
                                     "cmp": "guidance", "b": 15},
             "Too much guidance",
             "A large guidance scale follows the prompt harder but can overshoot: colours too strong, odd "
             "edges. Compare 5 with 15, then try your own values below."),
    ],
)

LESSONS: dict[str, Lesson] = {lesson.id: lesson for lesson in (GPT2, VIT, DIFFUSION)}
