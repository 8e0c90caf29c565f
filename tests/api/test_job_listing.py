"""Listing jobs: newest first, cursor pagination, and filters by status and metadata."""


def test_list_filters_by_metadata_and_status_and_pages(stack) -> None:  # type: ignore[no-untyped-def]
    project = stack.project("listing")
    upload = project.upload([{"prompt": "a", "completion": "b"}])
    ids = []
    for team in ("red", "blue", "red", "red"):
        # A queue no worker listens on: the jobs stay queued and nothing trains.
        ids.append(project.create_job({"model": "tiny-llama", "training_file": upload["id"],
                                       "metadata": {"team": team},
                                       "resources": {"gpu_class": "idle"}})["id"])
    project.http.post(f"/v1/fine_tuning/jobs/{ids[0]}/cancel")

    def listed(**params: str) -> dict:
        response = project.http.get("/v1/fine_tuning/jobs", params=params)
        assert response.status_code == 200, response.text
        return response.json()

    assert [j["id"] for j in listed()["data"]] == ids[::-1]
    red = listed(**{"metadata[team]": "red"})
    assert [j["id"] for j in red["data"]] == [ids[3], ids[2], ids[0]]
    first = listed(**{"metadata[team]": "red", "limit": "2"})
    assert [j["id"] for j in first["data"]] == [ids[3], ids[2]] and first["has_more"]
    rest = listed(**{"metadata[team]": "red", "limit": "2", "after": ids[2]})
    assert [j["id"] for j in rest["data"]] == [ids[0]] and not rest["has_more"]
    assert [j["id"] for j in listed(**{"metadata[team]": "red", "status": "queued"})["data"]] \
        == [ids[3], ids[2]]
    assert listed(**{"metadata[team]": "green"})["data"] == []
    for job_id in ids[1:]:
        project.http.post(f"/v1/fine_tuning/jobs/{job_id}/cancel")
