//! Embedding batching: concurrent requests for the same provider, model and parameters that
//! arrive within `EMBEDDING_BATCH_WINDOW_MS` go upstream as one request of at most
//! `EMBEDDING_BATCH_MAX_INPUTS` inputs. Each caller gets its own vectors in its own order and
//! its share of `usage` (shares proportional to its inputs, adding up to the upstream's total);
//! an upstream error reaches every caller of the batch.
//!
//! No thread of its own: the first caller of a batch leads it. It waits out the window (or
//! until the batch is full), makes the one upstream call on its own thread, and hands each
//! other caller its part through a channel. A window of 0 turns batching off.

use crate::error::ApiError;
use crate::sync::lock;
use crossbeam_channel::{Receiver, Sender};
use serde_json::{Map, Value, json};
use std::collections::HashMap;
use std::sync::{Arc, Condvar, Mutex};
use std::time::{Duration, Instant};

/// What one batch's upstream call returns: an OpenAI-shape embeddings list (`data` with
/// `index` and `embedding`, `usage`, `model`) and the request log's metadata.
pub type Answer = Result<(Value, Map<String, Value>), ApiError>;

/// The open batches, by what their requests share.
#[derive(Default)]
pub struct Batches {
    open: Mutex<HashMap<String, Arc<Batch>>>,
}

#[derive(Default)]
struct Batch {
    state: Mutex<Members>,
    /// Signalled when the batch fills up, so its leader stops waiting.
    full: Condvar,
}

#[derive(Default)]
struct Members {
    items: Vec<Value>,
    /// Every caller but the leader: how many items it brought, and where its part goes.
    joined: Vec<(usize, Sender<Answer>)>,
    closed: bool,
}

impl Batches {
    /// Runs `items` (one caller's inputs) through the batch for `key`; `call` sends a batch's
    /// items upstream and is run by the batch's leader. Returns this caller's part.
    pub fn run(
        &self,
        key: String,
        items: Vec<Value>,
        window: Duration,
        max_items: usize,
        call: impl FnOnce(Vec<Value>) -> Answer,
    ) -> Answer {
        if window.is_zero() || items.len() >= max_items {
            return call(items);
        }
        let n = items.len();
        match self.join_or_lead(key.clone(), items, max_items) {
            Role::Member(part) => part.recv().unwrap_or_else(|_| Err(ApiError::internal("an embedding batch failed"))),
            Role::Leader(batch) => self.lead(&key, &batch, n, window, call),
        }
    }

    /// Joins the open batch for `key` when this caller's items fit, else opens a new one.
    fn join_or_lead(&self, key: String, items: Vec<Value>, max_items: usize) -> Role {
        let mut open = lock(&self.open);
        if let Some(batch) = open.get(&key).cloned() {
            let mut members = lock(&batch.state);
            if !members.closed && members.items.len() + items.len() <= max_items {
                let (tx, rx) = crossbeam_channel::bounded(1);
                members.joined.push((items.len(), tx));
                members.items.extend(items);
                if members.items.len() >= max_items {
                    members.closed = true;
                    open.remove(&key);
                    batch.full.notify_one();
                }
                return Role::Member(rx);
            }
        }
        let batch = Arc::new(Batch::default());
        lock(&batch.state).items = items;
        open.insert(key, batch.clone());
        Role::Leader(batch)
    }

    /// Waits for the window to pass (or the batch to fill), closes the batch, calls upstream
    /// once, and shares the answer out.
    fn lead(
        &self,
        key: &str,
        batch: &Arc<Batch>,
        own: usize,
        window: Duration,
        call: impl FnOnce(Vec<Value>) -> Answer,
    ) -> Answer {
        let deadline = Instant::now() + window;
        let mut members = lock(&batch.state);
        while !members.closed {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                break;
            }
            members = batch.full.wait_timeout(members, left).unwrap_or_else(|e| e.into_inner()).0;
        }
        drop(members);
        // Closed under the map's lock, the order every joiner takes the two locks in.
        let (items, joined) = {
            let mut open = lock(&self.open);
            if open.get(key).is_some_and(|b| Arc::ptr_eq(b, batch)) {
                open.remove(key);
            }
            let mut members = lock(&batch.state);
            members.closed = true;
            (std::mem::take(&mut members.items), std::mem::take(&mut members.joined))
        };
        let counts: Vec<usize> = std::iter::once(own).chain(joined.iter().map(|(n, _)| *n)).collect();
        let mut parts = share(call(items), &counts).into_iter();
        let mine = parts.next().expect("one part per caller");
        for ((_, tx), part) in joined.into_iter().zip(parts) {
            let _ = tx.send(part);
        }
        mine
    }
}

enum Role {
    Member(Receiver<Answer>),
    Leader(Arc<Batch>),
}

/// Splits a batch's answer into one per caller, `counts[i]` items each, in order.
fn share(answer: Answer, counts: &[usize]) -> Vec<Answer> {
    if counts.len() == 1 {
        return vec![answer]; // nobody joined: the answer is the caller's as it came
    }
    match answer {
        Err(e) => counts.iter().map(|_| Err(e.clone())).collect(),
        Ok((response, meta)) => match split(&response, counts) {
            Ok(parts) => parts.into_iter().map(|p| Ok((p, meta.clone()))).collect(),
            Err(why) => {
                let e = ApiError::unusable_answer(format!("an embeddings batch came back {why}"));
                counts.iter().map(|_| Err(e.clone())).collect()
            }
        },
    }
}

/// One embeddings list per caller: its own vectors, indexed from 0, and its share of every
/// usage count (proportional to its items; the remainder goes to the first callers, so the
/// shares add up to the total).
fn split(response: &Value, counts: &[usize]) -> Result<Vec<Value>, String> {
    let total: usize = counts.iter().sum();
    let mut data: Vec<&Value> =
        response.get("data").and_then(Value::as_array).map(|d| d.iter().collect()).unwrap_or_default();
    if data.len() != total {
        return Err(format!("with {} vectors for {total} inputs", data.len()));
    }
    data.sort_by_key(|d| d.get("index").and_then(Value::as_u64).unwrap_or(u64::MAX));
    let usage = response.get("usage").and_then(Value::as_object);
    let shares: Vec<Map<String, Value>> =
        usage.map_or_else(|| vec![Map::new(); counts.len()], |u| share_usage(u, counts));
    let mut at = 0;
    let mut parts = Vec::with_capacity(counts.len());
    for (&n, usage) in counts.iter().zip(shares) {
        let vectors: Vec<Value> = data[at..at + n]
            .iter()
            .enumerate()
            .map(|(i, d)| {
                let mut d = (*d).clone();
                d["index"] = json!(i);
                d
            })
            .collect();
        at += n;
        let mut part = response.as_object().cloned().unwrap_or_default();
        part.insert("data".into(), Value::Array(vectors));
        if usage.is_empty() {
            part.remove("usage");
        } else {
            part.insert("usage".into(), Value::Object(usage));
        }
        parts.push(Value::Object(part));
    }
    Ok(parts)
}

fn share_usage(usage: &Map<String, Value>, counts: &[usize]) -> Vec<Map<String, Value>> {
    let total: u64 = counts.iter().map(|&n| n as u64).sum::<u64>().max(1);
    let mut shares = vec![Map::new(); counts.len()];
    for (name, value) in usage {
        let Some(amount) = value.as_u64() else { continue };
        let mut parts: Vec<u64> = counts.iter().map(|&n| amount * n as u64 / total).collect();
        let mut left = amount - parts.iter().sum::<u64>();
        for part in parts.iter_mut() {
            if left == 0 {
                break;
            }
            *part += 1;
            left -= 1;
        }
        for (share, part) in shares.iter_mut().zip(parts) {
            share.insert(name.clone(), json!(part));
        }
    }
    shares
}

#[cfg(test)]
mod tests {
    use super::*;

    fn batch_answer(n: usize) -> Value {
        let data: Vec<Value> =
            (0..n).rev().map(|i| json!({"object": "embedding", "index": i, "embedding": [i as f64]})).collect();
        json!({"object": "list", "model": "m", "data": data, "usage": {"prompt_tokens": 10, "total_tokens": 10}})
    }

    #[test]
    fn each_caller_gets_its_own_vectors_in_order_and_usage_adds_up() {
        let parts = split(&batch_answer(6), &[1, 2, 3]).unwrap();
        let vectors = |p: &Value| {
            p["data"].as_array().unwrap().iter().map(|d| d["embedding"][0].as_f64().unwrap()).collect::<Vec<_>>()
        };
        assert_eq!(vectors(&parts[0]), vec![0.0]);
        assert_eq!(vectors(&parts[1]), vec![1.0, 2.0]);
        assert_eq!(vectors(&parts[2]), vec![3.0, 4.0, 5.0]);
        assert_eq!(parts[2]["data"][0]["index"], 0, "indexes start at 0 for each caller");
        let tokens: Vec<u64> = parts.iter().map(|p| p["usage"]["prompt_tokens"].as_u64().unwrap()).collect();
        assert_eq!(tokens.iter().sum::<u64>(), 10);
        assert_eq!(tokens, vec![2, 3, 5], "proportional (1, 3, 5), the remainder to the first callers");
        assert!(split(&batch_answer(5), &[1, 2, 3]).is_err(), "a vector missing is an error for everyone");
    }

    #[test]
    fn a_full_batch_is_sent_at_once_and_errors_reach_everyone() {
        let batches = Arc::new(Batches::default());
        let calls = Arc::new(Mutex::new(Vec::new()));
        let run = |item: &str| {
            let (batches, calls, item) = (batches.clone(), calls.clone(), json!(item));
            std::thread::spawn(move || {
                // A window far longer than the test: the batch must go as soon as it is full.
                batches.run("k".into(), vec![item], Duration::from_secs(600), 3, move |all| {
                    calls.lock().unwrap().push(all.clone());
                    Ok((batch_answer(all.len()), Map::new()))
                })
            })
        };
        let callers: Vec<_> = ["a", "b", "c"].into_iter().map(run).collect();
        let parts: Vec<Value> = callers.into_iter().map(|h| h.join().unwrap().unwrap().0).collect();
        let calls = calls.lock().unwrap();
        assert_eq!(calls.len(), 1, "one upstream call for the batch: {calls:?}");
        assert_eq!(calls[0].len(), 3);
        for part in &parts {
            assert_eq!(part["data"].as_array().unwrap().len(), 1);
        }
        let errors = share(Err(ApiError::invalid_request("bad input")), &[1, 2]);
        assert!(errors.iter().all(|e| e.as_ref().is_err_and(|e| e.status == 400)));
    }
}
