"""Guided lessons: GET /api/lessons (every lesson, its step URLs), GET /api/lessons/{id}?example=
(one lesson with the teacher's example put in; the lesson panel reads it), and the pages: /lessons
(the index) and /lessons/{id}?example= (starts a lesson: a redirect to its first step)."""

from __future__ import annotations

from typing import Annotated
from urllib.parse import urlencode

from fastapi import APIRouter, HTTPException, Query, Request
from fastapi.responses import RedirectResponse

from app import i18n, images, schemas
from app.i18n import LANG_KEY, LANGUAGES, N_
from app.lessons import LESSONS, Lesson
from app.routes.errors import NOT_FOUND
from app.routes.pages import render, request_language

router = APIRouter(tags=["lessons"])

# ?lang=: the lesson's words in a shipped language; without it, the request's Accept-Language.
LangQuery = Annotated[str | None, Query(pattern="^(" + "|".join(LANGUAGES) + ")$",
                                        description="The language of the lesson's words: " + ", ".join(LANGUAGES)
                                        + ". Default: the Accept-Language header's choice, else en.")]


def get_lesson(lesson_id: str) -> Lesson:
    if lesson_id not in LESSONS:
        raise HTTPException(404, f"No lesson {lesson_id[:80]!r}; the lessons are: {', '.join(LESSONS)}.")
    return LESSONS[lesson_id]


def checked_example(lesson: Lesson, example: str | None) -> str | None:
    if example is not None:
        try:
            lesson.check_example(example)
        except ValueError as e:
            raise HTTPException(422, str(e)) from None
    return example


def lesson_out(lesson: Lesson, example: str | None = None) -> schemas.LessonOut:
    """The lesson (already translated, if it is to be) with `example` put into its step URLs."""
    return schemas.LessonOut(
        id=lesson.id,
        family=lesson.family,
        title=lesson.title,
        summary=lesson.summary,
        example=lesson.example if example is None else example,
        default_example=lesson.example,
        example_kind=lesson.example_kind,
        example_label=lesson.example_label,
        steps=[
            schemas.LessonStepOut(page=s.page, url=lesson.url(k, example), title=s.title, text=s.text)
            for k, s in enumerate(lesson.steps, 1)
        ],
    )


def gettext_of(request: Request):
    """The gettext of the request's language (`lang` in its query, else its Accept-Language)."""
    return i18n.gettext_for(request_language(request))


@router.get("/api/lessons", response_model=schemas.LessonsOut)
async def all_lessons(request: Request, lang: LangQuery = None):
    """Every lesson with its steps, for the default examples."""
    _ = gettext_of(request)
    return schemas.LessonsOut(lessons=[lesson_out(lesson.translated(_)) for lesson in LESSONS.values()])


@router.get("/api/lessons/{lesson_id}", response_model=schemas.LessonOut, responses=NOT_FOUND)  # no such lesson
async def one_lesson(request: Request, lesson_id: str, example: str | None = None, lang: LangQuery = None):
    """One lesson; `example` replaces its example input (a text, a picture id, a prompt) in every step."""
    lesson = get_lesson(lesson_id)
    return lesson_out(lesson.translated(gettext_of(request)), checked_example(lesson, example))


@router.get("/lessons", include_in_schema=False)
async def lessons_page(request: Request):
    _ = gettext_of(request)
    return render(request, "lessons.html", title=N_("Guided lessons"), gallery=images.gallery(),
                  lessons=[lesson.translated(_) for lesson in LESSONS.values()])


@router.get("/lessons/{lesson_id}", include_in_schema=False)
async def start_lesson(lesson_id: str, example: str | None = None, lang: str | None = None):
    lesson = get_lesson(lesson_id)
    if example is not None and (example == lesson.example or not example.strip()):
        example = None  # the index form sends the default (or nothing typed): keep the URL short
    url = lesson.url(1, checked_example(lesson, example))
    if lang in LANGUAGES:  # the index page's language goes on with the lesson
        url += "&" + urlencode({LANG_KEY: lang})
    return RedirectResponse(url, status_code=303)
