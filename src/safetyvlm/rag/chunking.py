"""Corpus passages -> LangChain `Document` chunks with stable ids and the passage's metadata.

A chunk's id is `<passage id>#<chunk index>`, so re-indexing an unchanged corpus yields the same ids
(upserts overwrite rather than duplicate, and answers can be traced back to a passage). Passage ids
are slugs (`[a-z0-9-]`), so `#` never occurs inside one.
"""

from __future__ import annotations

from collections.abc import Iterable

from langchain_core.documents import Document
from langchain_text_splitters import RecursiveCharacterTextSplitter

from safetyvlm.kb import Passage

SEPARATOR = "#"


def chunk_id(passage_id: str, index: int) -> str:
    return f"{passage_id}{SEPARATOR}{index}"


def passage_of(chunk_id_: str) -> str:
    return chunk_id_.rsplit(SEPARATOR, 1)[0]


def make_splitter(chunk_size: int, chunk_overlap: int) -> RecursiveCharacterTextSplitter:
    # sentence ends before words: chunks end on a full stop wherever the size allows
    return RecursiveCharacterTextSplitter(
        chunk_size=chunk_size, chunk_overlap=chunk_overlap,
        separators=["\n\n", "\n", ". ", "; ", ", ", " ", ""], keep_separator="end",
    )


def chunk_passages(passages: Iterable[Passage], chunk_size: int = 400, chunk_overlap: int = 80,
                   title_prefix: bool = True) -> list[Document]:
    """Split each passage; metadata: passage_id, category (None for general), title, chunk_index, chunk_id.

    With `title_prefix`, each chunk's text starts with `"<title>: "` so a later chunk that never names
    its tool still embeds close to that tool (the prefix does not count toward `chunk_size`).
    """
    splitter = make_splitter(chunk_size, chunk_overlap)
    docs: list[Document] = []
    for p in passages:
        for i, piece in enumerate(splitter.split_text(p.text)):
            piece = piece.strip()
            cid = chunk_id(p.id, i)
            text = f"{p.title}: {piece}" if title_prefix else piece
            docs.append(Document(id=cid, page_content=text, metadata={
                "chunk_id": cid, "passage_id": p.id, "category": p.category, "title": p.title,
                "chunk_index": i,
            }))
    return docs
