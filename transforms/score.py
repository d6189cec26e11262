"""Score: Matte -> Matte with its Scores against the row's ground truth (after Refine, before
WriteOutputs). The ground truth is read by the run's Reader, under its policy and limits.
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Iterator

import apache_beam as beam

from matteflow.transforms.coders import with_record_outputs
from matteflow.transforms.failures import classify
from matteflow.transforms.quality import scores
from matteflow.transforms.reader import Reader
from matteflow.transforms.types import Clock, Failed, Matte, elapsed_ms

__all__ = ["Score"]


class _ScoreFn(beam.DoFn):
    def __init__(self, reader: Reader, clock: Clock = time.perf_counter) -> None:
        self._reader = reader
        self._clock = clock

    def process(self, matte: Matte) -> Iterator[Matte | beam.pvalue.TaggedOutput[str, Failed]]:
        task = matte.image.task
        if not task.ground_truth_uri:
            yield matte
            return
        start = self._clock()
        try:
            height, width = matte.alpha.shape
            gt = self._reader.shaped_alpha(task.ground_truth_uri, height, width)
            values = scores(matte.alpha, gt)
        except Exception as err:
            failure = classify(err, "score", task.ground_truth_uri)
            failure.stage = "score"  # a missing ground truth is a scoring failure, not a fetch
            yield beam.pvalue.TaggedOutput("failures", Failed.from_error(task, failure))
            return
        timings = matte.timings.add(score_ms=elapsed_ms(start, self._clock()))
        yield dataclasses.replace(matte, scores=values, timings=timings)


class Score(beam.PTransform[beam.pvalue.PCollection[Matte], beam.pvalue.DoOutputsTuple]):
    """Matte -> Matte with Scores for rows with ground truth (read by `reader`); failures ->
    tag "failures"."""

    def __init__(self, reader: Reader | None = None, clock: Clock = time.perf_counter) -> None:
        super().__init__()
        self._reader = reader or Reader()
        self._clock = clock

    def expand(self, mattes: beam.pvalue.PCollection[Matte]) -> beam.pvalue.DoOutputsTuple:
        fn = _ScoreFn(self._reader, self._clock)
        typed = with_record_outputs(beam.ParDo(fn), Matte, failures=Failed)
        outputs: beam.pvalue.DoOutputsTuple = mattes | "Score" >> typed
        return outputs
