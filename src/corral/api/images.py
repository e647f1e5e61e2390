"""/v1/images and /v1/recipes: build images in the background, list, show, delete."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Depends
from fastapi.responses import JSONResponse, Response
from pydantic import BaseModel

from corral.api.context import ApiContext, api_context
from corral.api.responses import accepted, items
from corral.model.image import Image, ImageBuildRequest
from corral.model.operation import Operation

router = APIRouter(tags=["images"])
Context = Annotated[ApiContext, Depends(api_context)]


class ImageList(BaseModel):
    """GET /v1/images."""

    items: list[Image]


class RecipeList(BaseModel):
    """GET /v1/recipes."""

    items: list[str]


@router.get("/v1/images", response_model=ImageList)
async def list_images(context: Context) -> JSONResponse:
    """Every image, by name."""
    return items([image.model_dump(mode="json") for image in context.controller.images.list()])


@router.post(
    "/v1/images",
    status_code=202,
    responses={202: {"model": Operation, "description": "Accepted: follow the build"}},
)
async def build_image(body: ImageBuildRequest, context: Context) -> JSONResponse:
    """Build `recipe` into an image called `name` (default: the recipe's name)."""
    return accepted(context.controller.images.start_build(body.recipe, body.name))


@router.get("/v1/images/{name}", response_model=Image)
async def get_image(name: str, context: Context) -> Image:
    """One image."""
    return context.controller.images.get(name)


@router.delete("/v1/images/{name}", status_code=204, response_class=Response)
async def delete_image(name: str, context: Context) -> Response:
    """Delete an image; 409 image_in_use while instances use it."""
    await context.controller.images.delete(name)
    return Response(status_code=204)


@router.get("/v1/recipes", response_model=RecipeList)
async def list_recipes(context: Context) -> RecipeList:
    """Recipes this server can build images from."""
    return RecipeList(items=context.controller.images.recipes())
