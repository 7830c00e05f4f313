"""Tests of lecturelib.captioning: the vocabulary and reading order, shapes, the padding left out of the loss,
soft attention, greedy and beam decoding stopping at <end>, the equal-size baseline, the task's metrics."""
import math

import pytest
import torch

from lecturelib import captioning as C
from lecturelib.scenes import CourseScenes
from lecturelib.tasks import CaptionTask
from lecturelib.training import count_parameters, evaluate, fit, train_config

CFG = C.CaptionConfig(width=4, embed=8, hidden=12, attention_dim=8, epochs=1, batch_size=4)


def _model(attention=True, seed=0):
    torch.manual_seed(seed)
    return (C.attention_captioner(CFG) if attention else C.mean_pool_captioner(CFG)).eval()


def test_vocabulary_and_reading_order():
    assert C.VOCAB[:3] == ("<pad>", "<start>", "<end>") and len(C.VOCAB) == 13
    assert C.VOCAB[C.token_of_class(9)] == "bag"
    boxes = [[40, 0, 50, 10], [0, 30, 10, 40], [0, 0, 10, 10], [20, 5, 30, 15]]
    assert C.reading_order(boxes).tolist() == [2, 1, 3, 0]             # same x: the upper one first
    assert C.words(C.caption_of([9, 8, 4, 1], boxes)) == ["dress", "sneaker", "T-shirt/top", "bag"]


def test_encode_pads_and_refuses_empty_or_long_captions():
    t = C.encode([[3, 4], [5]], max_len=5)
    assert t.tolist() == [[1, 3, 4, 2, 0], [1, 5, 2, 0, 0]]
    assert C.strip(t[0]) == [3, 4] and C.words(t[1]) == ["pullover"]
    with pytest.raises(ValueError, match="empty"):
        C.encode([[3], []])
    with pytest.raises(ValueError, match="max_len"):
        C.encode([[3, 3, 3, 3]], max_len=5)
    with pytest.raises(ValueError, match="word tokens"):
        C.encode([[2]])


def test_shapes_and_attention_is_a_distribution():
    model = _model()
    images = torch.rand(2, 3, 32, 32)
    tokens = C.encode([[3, 4, 5], [6]])
    out = model(images, tokens)
    assert out["out"].shape == (2, C.MAX_LEN - 1, len(C.VOCAB)) and out["alpha"].shape == (2, C.MAX_LEN - 1, 16)
    assert torch.allclose(out["alpha"].sum(-1), torch.ones(2, C.MAX_LEN - 1), atol=1e-6)
    flat = _model(attention=False)(images, tokens)["alpha"]
    assert torch.allclose(flat, torch.full_like(flat, 1 / 16))
    with pytest.raises(ValueError, match="tokens"):
        model(images, tokens[:1])


def test_soft_attention_step_by_hand():
    att = C.AdditiveAttention(3, 2, 4)
    a, h = torch.randn(1, 5, 3), torch.randn(1, 2)
    e = torch.stack([att.score(torch.tanh(att.w_a(a[0, i]) + att.w_h(h[0]))) for i in range(5)]).reshape(1, 5)
    alpha = torch.softmax(e, 1)
    z, got = att(a, h)
    assert torch.allclose(got, alpha, atol=1e-6) and torch.allclose(z, alpha @ a[0], atol=1e-6)


def test_padding_is_left_out_of_the_loss():
    tokens = C.encode([[3, 4], [5, 6, 7, 8]])
    logits = torch.randn(2, C.MAX_LEN - 1, len(C.VOCAB))
    changed = logits.clone()
    changed[0, 3:] = 100 * torch.randn_like(changed[0, 3:])          # scene 0: <start> 3 4 <end> then padding
    assert torch.equal(C.caption_loss(logits, tokens), C.caption_loss(changed, tokens))
    changed[0, 2] += 5                                                # the <end> prediction counts
    assert not torch.equal(C.caption_loss(logits, tokens), C.caption_loss(changed, tokens))
    with pytest.raises(ValueError, match="logits"):
        C.caption_loss(logits[:, :3], tokens)


def _always(after):
    """A captioner that, after token p, gives token after[p] a logit of +50 and every other -50 (9 by default)."""
    model = _model()
    step = model.step

    def fixed(state, previous):
        logits, h, alpha = step(state, previous)
        forced = torch.full_like(logits, -50.0)
        for n, p in enumerate(previous.tolist()):
            forced[n, after.get(p, 9)] = 50.0
        return forced, h, alpha

    model.step = fixed
    return model


def test_greedy_and_beam_stop_at_end():
    model = _always({C.START: 5, 5: 7, 7: C.END})
    tokens, alphas = model.greedy(torch.rand(2, 3, 32, 32))
    assert tokens.tolist() == [[C.START, 5, 7, C.END, C.PAD, C.PAD, C.PAD, C.PAD]] * 2
    assert alphas.shape == (2, C.MAX_LEN - 1, 16) and (alphas[:, 3:] == 0).all()
    never = _always({})                                              # no <end>: cut at max_len
    assert never.greedy(torch.rand(1, 3, 32, 32))[0][0].tolist() == [C.START] + [9] * (C.MAX_LEN - 1)
    best, score = C.beam_search(model, torch.rand(3, 32, 32), beam=2)[0]
    assert best[:4] == [C.START, 5, 7, C.END] and len(best) == 4


def test_beam_one_is_greedy_and_beams_are_sorted():
    model = _model(seed=3)
    image = torch.rand(3, 32, 32)
    greedy = C.strip(model.greedy(image[None])[0][0])
    assert C.strip(C.beam_search(model, image, beam=1)[0][0]) == greedy
    results = C.beam_search(model, image, beam=4)
    scores = [s for _, s in results]
    assert scores == sorted(scores, reverse=True) and scores[0] >= C.beam_search(model, image, beam=1)[0][1] - 1e-6
    with pytest.raises(ValueError, match="one image"):
        C.beam_search(model, image[None])


def test_the_baseline_has_at_least_the_parameters_of_the_attention_model():
    a, b = count_parameters(_model()), count_parameters(_model(attention=False))
    assert a <= b <= 1.02 * a


def test_attention_hits_count_the_peak_on_the_mask():
    masks = torch.zeros(2, 16, 16, dtype=torch.bool)
    masks[0, :8, :8] = True                                          # item 0: top-left cell of a 2x2 grid
    masks[1, 8:, 8:] = True                                          # item 1: bottom-right cell
    truth = C.encode([[3, 4]])
    alphas = torch.zeros(1, C.MAX_LEN - 1, 4)
    alphas[0, 0, 0] = 1                                              # word 0 looks at the top-left cell: hit
    alphas[0, 1, 0] = 1                                              # word 1 too: miss
    got = C.attention_hits(truth, truth, alphas, [masks], side=2)
    assert got == {"words": 2, "hits": 1, "chance": 0.5}


def test_caption_task_trains_and_evaluates():
    ds = CourseScenes("train", n=12, size=32, mode="instance")
    pairs = [ds[i] for i in range(12)]
    task = CaptionTask(CFG, pairs, pairs)
    assert len(task.test_set.masks) == len(task.test_set) and task.test_set.tokens.shape[1] == C.MAX_LEN
    torch.manual_seed(0)
    model = C.attention_captioner(CFG)
    hist = fit(model, task, train_config(CFG, seed=0, progress=False), "cpu")
    assert math.isfinite(hist.train_loss[0])
    m = evaluate(model, task)
    assert 0 <= m["exact_match"] <= m["item_acc"] + 1e-9 <= 1 + 1e-9 or m["exact_match"] <= 1
    assert "attention_chance" in m or m["item_acc"] == 0
    assert "attention_hit" not in evaluate(C.mean_pool_captioner(CFG), task)
