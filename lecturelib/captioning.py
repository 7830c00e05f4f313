"""Image captioning with soft attention (Xu, Ba, Kiros, Cho, Courville, Salakhutdinov, Zemel & Bengio, "Show,
Attend and Tell: Neural Image Caption Generation with Visual Attention", ICML 2015).

A course scene's **caption** is the list of its items read left to right (by the centre of each item's box),
e.g. ``<start> bag sneaker dress <end>``: the vocabulary is the 10 class names, ``<start>``, ``<end>`` and the
padding token ``<pad>`` (:data:`VOCAB`).

- The **encoder** is a small CNN: image float[N, 3, S, S] -> feature grid float[N, D, S/8, S/8], read as
  L = (S/8)² annotation vectors a_1 .. a_L of D numbers (the paper's L×D grid), each followed by its
  normalised (x, y) position (two channels, so that "left to right" can be found).
- The **decoder** is a GRU. At step t, **soft attention** (the paper's Section 3.1.2 and 4.2, the additive
  "deterministic soft attention") scores every location with a small MLP of the location and the previous
  hidden state, ``e_ti = w·tanh(W_a a_i + W_h h_{t-1})``, turns the scores into a distribution
  ``α_t = softmax(e_t)`` over the L locations, and feeds the expected feature ``z_t = β_t Σ_i α_ti a_i`` (β_t a
  learned gate, the paper's Section 4.2.1) with the previous word to the GRU. The word scores are the paper's
  "deep output" ``L_o(E y_{t-1} + L_h h_t + L_z z_t)``. The initial state is an MLP of the mean annotation.
- **Teacher forcing**: in training, the input at step t is the *true* previous word; the loss is the
  cross-entropy of every next word, padding excluded (:func:`caption_loss`).
- Decoding: :meth:`Captioner.greedy` (the most likely word each step) and :func:`beam_search`; both stop at
  ``<end>``.
- The **"no attention" baseline** (:func:`mean_pool_captioner`) feeds the *mean* annotation at every step
  (α uniform, as in the earlier captioning models the paper compares with), with a wider GRU so that it has at
  least as many parameters as the attention model (:func:`matched_hidden`).

Left out of the paper: its LSTM (a GRU here: fewer gates, the same role), its pretrained VGG encoder, the
"doubly stochastic" regulariser and hard (sampled) attention.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from .scenes import CLASS_NAMES, SceneConfig
from .training import count_parameters

# ============================================================================= the vocabulary
PAD, START, END = 0, 1, 2
VOCAB = ("<pad>", "<start>", "<end>") + tuple(CLASS_NAMES[1:])
FIRST_WORD = 3                              # token of class 1 (the first item class)
MAX_ITEMS = SceneConfig().max_items         # the longest caption: every item of a scene
MAX_LEN = MAX_ITEMS + 2                     # with <start> and <end>


def token_of_class(cls: int) -> int:
    """The token of item class ``cls`` (1..10, the scenes' labels)."""
    if not 1 <= int(cls) <= len(CLASS_NAMES) - 1:
        raise ValueError(f"an item class is 1..{len(CLASS_NAMES) - 1}, got {cls}")
    return int(cls) - 1 + FIRST_WORD


def reading_order(boxes) -> np.ndarray:
    """The order in which a caption names the items: by the x of each box centre, then its y (top first).

    boxes: float[K, 4] pixel-edge (x0, y0, x1, y1). Returns int64[K], indices into the items.
    """
    b = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    cx, cy = (b[:, 0] + b[:, 2]) / 2, (b[:, 1] + b[:, 3]) / 2
    return np.lexsort((cy, cx)).astype(np.int64)


def caption_of(labels, boxes) -> list[int]:
    """The caption tokens of a scene (without <start>/<end>): its items' words, read left to right."""
    labels = np.asarray(labels).reshape(-1)
    return [token_of_class(labels[i]) for i in reading_order(boxes)]


def encode(captions: list[list[int]], max_len: int = MAX_LEN) -> torch.Tensor:
    """Captions (lists of word tokens) -> int64[N, max_len]: ``<start> w_1 .. w_k <end> <pad> ...``.

    Raises ValueError for an empty caption (a scene without items has nothing to say) or one too long.
    """
    out = torch.full((len(captions), max_len), PAD, dtype=torch.long)
    for n, words in enumerate(captions):
        words = [int(w) for w in words]
        if not words:
            raise ValueError(f"caption {n} is empty: every caption names at least one item")
        if len(words) + 2 > max_len:
            raise ValueError(f"caption {n} has {len(words)} words; max_len={max_len} holds {max_len - 2}")
        if any(w < FIRST_WORD or w >= len(VOCAB) for w in words):
            raise ValueError(f"caption {n} holds {words}: word tokens are {FIRST_WORD}..{len(VOCAB) - 1}")
        out[n, :len(words) + 2] = torch.tensor([START, *words, END])
    return out


def words(tokens) -> list[str]:
    """The words of a token sequence, without <start>, stopping at the first <end> or <pad>."""
    return [VOCAB[t] for t in strip(tokens)]


def strip(tokens) -> list[int]:
    """The word tokens of a decoded or encoded sequence: <start> dropped, cut at the first <end> or <pad>."""
    out = []
    for t in (tokens.tolist() if isinstance(tokens, torch.Tensor) else tokens):
        if t in (END, PAD):
            break
        if t != START:
            out.append(int(t))
    return out


# ============================================================================= the recipe
@dataclass(frozen=True)
class CaptionConfig:
    """The recipe of lesson 09's captioning models.

    width: the encoder's first channels (then 2×, 4× = D, the annotation size); embed: word embedding size;
    hidden: the GRU state size of the attention model; attention_dim: the attention MLP's size; max_len: the
    longest token sequence (<start> and <end> included); epochs, lr, batch_size: training.
    """

    vocab_size: int = len(VOCAB)
    width: int = 16
    embed: int = 32
    hidden: int = 96
    attention_dim: int = 64
    max_len: int = MAX_LEN
    epochs: int = 8
    lr: float = 3e-3
    batch_size: int = 32
    grad_clip: float = 5.0

    def __post_init__(self):
        for name in ("vocab_size", "width", "embed", "hidden", "attention_dim", "max_len", "epochs", "batch_size"):
            v = getattr(self, name)
            if not isinstance(v, (int, np.integer)) or isinstance(v, bool) or v < 1:
                raise ValueError(f"CaptionConfig.{name} must be a positive int, got {v!r}")
        if self.max_len < 3:
            raise ValueError(f"CaptionConfig.max_len must hold <start>, a word and <end> (>= 3), got {self.max_len}")

    @property
    def feature_dim(self) -> int:
        """D: channels of an annotation vector (the encoder's 4 × width, plus the two position channels)."""
        return 4 * self.width + 2

    @classmethod
    def from_profile(cls, profile, **changes) -> "CaptionConfig":
        """The lesson's recipe for ``profile``; ``changes`` override fields."""
        w = profile.width
        base = dict(width=w, embed=2 * w, hidden=6 * w, attention_dim=4 * w, epochs=2 * profile.epochs,
                    batch_size=profile.batch_size)
        return cls(**{**base, **changes})


# ============================================================================= encoder
def _conv(cin: int, cout: int) -> list[nn.Module]:
    return [nn.Conv2d(cin, cout, 3, padding=1, bias=False), nn.BatchNorm2d(cout), nn.ReLU(inplace=True)]


class Encoder(nn.Module):
    """image float[N, 3, S, S] -> annotations float[N, L, D] with L = (S/8)², D = 4·width + 2 (the last two: x, y
    of the cell centre in [-1, 1]); also returns the grid side S/8. Three conv + pool stages and two more convs at
    stride 8 (receptive field 52 pixels: a whole item)."""

    def __init__(self, width: int):
        super().__init__()
        w = width
        self.net = nn.Sequential(*_conv(3, w), nn.MaxPool2d(2), *_conv(w, 2 * w), nn.MaxPool2d(2),
                                 *_conv(2 * w, 4 * w), nn.MaxPool2d(2), *_conv(4 * w, 4 * w), *_conv(4 * w, 4 * w))

    def forward(self, images: torch.Tensor) -> tuple[torch.Tensor, int]:
        if images.dim() != 4 or images.shape[1] != 3 or images.shape[-1] % 8 or images.shape[-2] % 8:
            raise ValueError(f"the encoder takes images [N, 3, H, W] with H and W multiples of 8, got "
                             f"{tuple(images.shape)}")
        f = self.net(images - 0.5)                                              # (N, 4w, h, w)
        n, _, h, w = f.shape
        ys = (torch.arange(h, device=f.device, dtype=f.dtype) * 2 + 1) / h - 1
        xs = (torch.arange(w, device=f.device, dtype=f.dtype) * 2 + 1) / w - 1
        gy, gx = torch.meshgrid(ys, xs, indexing="ij")
        pos = torch.stack([gx, gy]).expand(n, 2, h, w)
        return torch.cat([f, pos], dim=1).flatten(2).transpose(1, 2), w       # (N, L, D)


# ============================================================================= attention and decoder
class AdditiveAttention(nn.Module):
    """Soft attention (Xu et al. 2015, after Bahdanau et al. 2015): ``α = softmax_i(w·tanh(W_a a_i + W_h h))``,
    ``z = Σ_i α_i a_i``.

    forward(annotations float[N, L, D], hidden float[N, H], projected float[N, L, A] or None) ->
    (z float[N, D], α float[N, L]). ``projected`` = ``W_a a`` computed once per image (:meth:`project`).
    """

    def __init__(self, feature_dim: int, hidden: int, attention_dim: int):
        super().__init__()
        self.w_a = nn.Linear(feature_dim, attention_dim)
        self.w_h = nn.Linear(hidden, attention_dim, bias=False)
        self.score = nn.Linear(attention_dim, 1)

    def project(self, annotations: torch.Tensor) -> torch.Tensor:
        return self.w_a(annotations)

    def forward(self, annotations, hidden, projected=None):
        projected = self.project(annotations) if projected is None else projected
        e = self.score(torch.tanh(projected + self.w_h(hidden)[:, None])).squeeze(-1)     # (N, L)
        alpha = torch.softmax(e, dim=1)
        return (alpha[..., None] * annotations).sum(dim=1), alpha


class Captioner(nn.Module):
    """Encoder + GRU decoder, with soft attention (``attention=True``) or the mean annotation at every step.

    forward(images float[N, 3, S, S], tokens int64[N, T]) -> {"out": word logits float[N, T-1, V] for tokens
    1..T-1 (teacher forcing: the input at step t is ``tokens[:, t]``), "alpha": float[N, T-1, L]}.
    """

    def __init__(self, config: CaptionConfig, attention: bool = True, hidden: int | None = None):
        super().__init__()
        c = config
        self.config, self.attention_on = c, attention
        self.hidden = hidden or c.hidden
        D, H = c.feature_dim, self.hidden
        self.encoder = Encoder(c.width)
        self.embed = nn.Embedding(c.vocab_size, c.embed, padding_idx=PAD)
        self.init_h = nn.Linear(D, H)
        self.attention = AdditiveAttention(D, H, c.attention_dim) if attention else None
        self.gate = nn.Linear(H, 1) if attention else None
        self.gru = nn.GRUCell(c.embed + D, H)
        self.out_h, self.out_z = nn.Linear(H, c.embed), nn.Linear(D, c.embed, bias=False)
        self.out = nn.Linear(c.embed, c.vocab_size)

    # ---------------------------------------------------------------- pieces
    def start(self, images: torch.Tensor) -> dict:
        """Encode the images once: annotations, their projection for attention, the initial state."""
        a, side = self.encoder(images)
        state = {"a": a, "side": side, "h": torch.tanh(self.init_h(a.mean(dim=1)))}
        state["proj"] = self.attention.project(a) if self.attention is not None else None
        return state

    def step(self, state: dict, previous: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        """One decoder step: previous word int64[N] -> (word logits float[N, V], new hidden, α float[N, L])."""
        a, h = state["a"], state["h"]
        if self.attention is not None:
            z, alpha = self.attention(a, h, state["proj"])
            z = torch.sigmoid(self.gate(h)) * z
        else:
            z = a.mean(dim=1)
            alpha = torch.full(a.shape[:2], 1.0 / a.shape[1], device=a.device, dtype=a.dtype)
        e = self.embed(previous)
        h = self.gru(torch.cat([e, z], dim=1), h)
        logits = self.out(torch.tanh(e + self.out_h(h) + self.out_z(z)))
        return logits, h, alpha

    # ---------------------------------------------------------------- training
    def forward(self, images: torch.Tensor, tokens: torch.Tensor) -> dict:
        if tokens.dim() != 2 or tokens.shape[0] != images.shape[0] or tokens.shape[1] < 2:
            raise ValueError(f"tokens must be int64[N, T] with T >= 2 and N = {images.shape[0]} images, got "
                             f"{tuple(tokens.shape)}")
        state = self.start(images)
        logits, alphas = [], []
        for t in range(tokens.shape[1] - 1):
            lg, state["h"], alpha = self.step(state, tokens[:, t])
            logits.append(lg)
            alphas.append(alpha)
        return {"out": torch.stack(logits, 1), "alpha": torch.stack(alphas, 1)}

    # ---------------------------------------------------------------- decoding
    @torch.no_grad()
    def greedy(self, images: torch.Tensor, max_len: int | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """The most likely word at every step, until ``<end>`` (or max_len - 1 words).

        Returns tokens int64[N, max_len] (``<start>`` first, ``<pad>`` after ``<end>``) and the attention of
        every generated token float[N, max_len - 1, L] (row t: the α that produced token t + 1).
        """
        max_len = max_len or self.config.max_len
        state = self.start(images)
        n = images.shape[0]
        tokens = torch.full((n, max_len), PAD, dtype=torch.long, device=images.device)
        tokens[:, 0] = START
        alphas = torch.zeros(n, max_len - 1, state["a"].shape[1], device=images.device)
        done = torch.zeros(n, dtype=torch.bool, device=images.device)
        for t in range(max_len - 1):
            logits, state["h"], alpha = self.step(state, tokens[:, t])
            word = logits.argmax(dim=1)
            word = torch.where(done, torch.full_like(word, PAD), word)
            tokens[:, t + 1] = word
            alphas[:, t] = alpha * (~done)[:, None]
            done |= word == END
            if done.all():
                break
        return tokens, alphas


@torch.no_grad()
def beam_search(model: Captioner, image: torch.Tensor, beam: int = 3, max_len: int | None = None) -> list[tuple]:
    """Beam search for one image float[3, S, S]: the ``beam`` best token sequences by total log-probability.

    At every step each unfinished sequence is extended by every word; the ``beam`` best of all extensions stay.
    A sequence that emits ``<end>`` is finished. Returns [(tokens list starting with <start> and ending with
    <end> unless cut at max_len, log-probability)], best first. beam=1 is the greedy decoder.
    """
    if image.dim() != 3:
        raise ValueError(f"beam_search takes one image [3, H, W], got {tuple(image.shape)}")
    if not isinstance(beam, int) or beam < 1:
        raise ValueError(f"beam must be a positive int, got {beam!r}")
    max_len = max_len or model.config.max_len
    state = model.start(image[None])
    live = [([START], 0.0, state["h"])]
    finished = []
    for _ in range(max_len - 1):
        candidates = []
        for seq, score, h in live:
            s = dict(state, h=h)
            logits, h_new, _ = model.step(s, torch.tensor([seq[-1]], device=image.device))
            logp = torch.log_softmax(logits[0], dim=0)
            logp[PAD] = logp[START] = -float("inf")
            top = torch.topk(logp, beam)
            candidates += [(seq + [int(w)], score + float(v), h_new) for v, w in zip(top.values, top.indices)]
        candidates.sort(key=lambda c: -c[1])
        live = []
        for seq, score, h in candidates[:beam]:
            (finished if seq[-1] == END else live).append((seq, score, h))
        if not live:
            break
    finished += live                                           # cut at max_len
    finished.sort(key=lambda c: -c[1])
    return [(seq, score) for seq, score, _ in finished[:beam]]


def caption_loss(logits: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """Teacher-forcing loss: the mean cross-entropy of tokens[:, 1:] under ``logits`` float[N, T-1, V], padding
    positions excluded (``ignore_index=PAD``)."""
    if logits.shape[:2] != (tokens.shape[0], tokens.shape[1] - 1):
        raise ValueError(f"logits {tuple(logits.shape)} do not fit tokens {tuple(tokens.shape)}: expected "
                         f"[N, T-1, V] = [{tokens.shape[0]}, {tokens.shape[1] - 1}, V]")
    return F.cross_entropy(logits.reshape(-1, logits.shape[-1]).float(), tokens[:, 1:].reshape(-1),
                           ignore_index=PAD)


# ============================================================================= the two models
def attention_captioner(config: CaptionConfig) -> Captioner:
    """The captioner with soft attention."""
    return Captioner(config, attention=True)


def matched_hidden(config: CaptionConfig) -> int:
    """The smallest GRU size of the mean-pooled captioner with at least the attention captioner's parameters."""
    target = count_parameters(Captioner(config, attention=True))
    hidden = config.hidden
    while count_parameters(Captioner(config, attention=False, hidden=hidden)) < target:
        hidden += 1
    return hidden


def mean_pool_captioner(config: CaptionConfig) -> Captioner:
    """The "no attention" baseline: the mean annotation at every step, GRU widened to match the parameters."""
    return Captioner(config, attention=False, hidden=matched_hidden(config))


# ============================================================================= data and metrics
@dataclass
class CaptionData:
    """Scenes for captioning: images float[N, 3, S, S], tokens int64[N, max_len], and per scene its item masks
    bool[K, S, S] in caption order (for the attention metrics; may be None)."""

    images: torch.Tensor
    tokens: torch.Tensor
    masks: list | None = None

    def __len__(self) -> int:
        return len(self.images)

    def __getitem__(self, i):
        return self.images[i], self.tokens[i]


def caption_data(pairs, max_len: int = MAX_LEN, keep_masks: bool = True) -> CaptionData:
    """Scenes in the detection format ``(image, {"boxes", "labels", "masks"})`` -> :class:`CaptionData`.

    A scene without items (the generator could place none) has no caption and is left out.
    """
    images, captions, masks = [], [], []
    for image, target in pairs:
        if len(target["labels"]) == 0:
            continue
        order = reading_order(target["boxes"].numpy())
        captions.append([token_of_class(target["labels"][i]) for i in order])
        images.append(image)
        if keep_masks:
            masks.append(target["masks"][torch.from_numpy(order)].bool())
    return CaptionData(torch.stack(images), encode(captions, max_len), masks if keep_masks else None)


def cell_coverage(masks: torch.Tensor, side: int) -> torch.Tensor:
    """Which cells of a ``side`` × ``side`` grid over the image each mask touches: bool[K, side²] (row-major)."""
    K, H, W = masks.shape
    cells = masks.reshape(K, side, H // side, side, W // side).any(dim=(2, 4))
    return cells.reshape(K, side * side)


def caption_scores(predicted: torch.Tensor, truth: torch.Tensor) -> dict:
    """Per scene: exact match (bool[N]), items named right at their position (int[N]) and item count (int[N]).

    predicted, truth: token sequences int64[N, T] (``<start>`` first).
    """
    exact, right, count = [], [], []
    for p, t in zip(predicted, truth):
        p, t = strip(p), strip(t)
        exact.append(p == t)
        right.append(sum(int(i < len(p) and p[i] == w) for i, w in enumerate(t)))
        count.append(len(t))
    return {"exact": torch.tensor(exact), "right": torch.tensor(right), "count": torch.tensor(count)}


def attention_hits(predicted: torch.Tensor, truth: torch.Tensor, alphas: torch.Tensor, masks: list,
                   side: int) -> dict:
    """Where the attention peaks when the model names an item right.

    For every generated word that equals the true word at its position (item k of the caption), the peak of its
    α (one cell of the ``side`` × ``side`` grid) is a *hit* when item k's mask touches that cell. ``chance`` sums,
    over the same words, the share of cells the mask touches (the hit rate of a peak drawn at random).
    Returns sums {"words", "hits", "chance"}.
    """
    words_n, hits, chance = 0, 0, 0.0
    for p, t, a, m in zip(predicted, truth, alphas, masks):
        p, t = strip(p), strip(t)
        cover = cell_coverage(m, side)
        for k, w in enumerate(t):
            if k < len(p) and p[k] == w:
                words_n += 1
                hits += int(cover[k, int(a[k].argmax())])
                chance += float(cover[k].float().mean())
    return {"words": words_n, "hits": hits, "chance": chance}


def constant_baselines(tokens: torch.Tensor, min_items: int = 3) -> dict:
    """Trivial baselines on the scenes of at least ``min_items`` items of ``tokens`` int64[N, T]: ``item_acc`` of
    naming the most common word at every position (the true number of items given), ``exact_match`` of the most
    common caption, both chosen on these very scenes (an upper bound for a constant answer); ``scenes``: how many."""
    captions = [strip(t) for t in tokens]
    chosen = [c for c in captions if len(c) >= min_items]
    if not chosen:
        raise ValueError(f"no caption has {min_items} or more items")
    all_words = [w for c in chosen for w in c]
    word = max(set(all_words), key=all_words.count)
    keys = [tuple(c) for c in chosen]
    top = max(set(keys), key=keys.count)
    return {"scenes": len(chosen), "item_acc": all_words.count(word) / len(all_words),
            "exact_match": keys.count(top) / len(keys)}
