from tests.conftest import AppClient
from tests.factories import bearer, register


async def test_register_and_me(client: AppClient) -> None:
    auth = await register(client)
    response = await client.get("/api/v1/me", headers=bearer(auth["token"]))
    assert response.status == 200
    assert (await response.json())["phone"] == auth["user"]["phone"]
