"""Answering images: what the model says, read into the output contract with boxes in each image's pixels.

    read.py        read_answer: model text -> report in image pixels (the one place boxes leave a model's frame)
    plain.py       predict_reports: one greedy pass, read
    retrieval.py   answer_with_retrieval: detect, retrieve passages for what was detected, answer again

Eval, the service, the preference stages, the CLI and the benchmarks answer through these. Torch-free at
import, like the model modules underneath (LangChain only comes with a retriever).
"""

from safetyvlm.answer.plain import predict_reports
from safetyvlm.answer.read import read_answer, to_image_pixels
from safetyvlm.answer.retrieval import RetrievalAnswer, answer_with_retrieval, detected_tools

__all__ = ["RetrievalAnswer", "answer_with_retrieval", "detected_tools", "predict_reports", "read_answer",
           "to_image_pixels"]
