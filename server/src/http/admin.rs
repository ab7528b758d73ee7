//! Operator endpoints under `/v1/admin`, authenticated like every `/v1` route.

use axum::extract::State;
use axum::Json;

use super::error::ApiResult;
use super::retrain::{Retrained, Trigger};
use super::AppState;

/// `POST /v1/admin/retrain`: retrains the classifiers from every labelled
/// ticket now and answers when done, with the labelled example count and the
/// seconds taken; 409 while another retrain runs.
pub async fn retrain(State(state): State<AppState>) -> ApiResult<Json<Retrained>> {
    let engine = state.engine()?;
    Ok(Json(
        state.retrainer().retrain(engine, Trigger::Admin).await?,
    ))
}
