//! `taskwire call`: send any request given as canonical JSON and print the answer as JSON.

use std::time::Duration;

use taskwire_proto::MessageSet;
use taskwire_proto::registry::{self, AnyMessage, CallShape, MessageInfo};
use taskwire_rpc::{CallError, CallOptions};

use crate::error::{CliError, print_line};
use crate::tls_setup::ClientArgs;

/// Send one request to a taskwire server over QUIC or TCP and print the answer as JSON.
#[derive(clap::Args, Debug)]
#[command(after_help = "\
Examples:
  taskwire call --list
  taskwire call taskwire.management.v1.HealthRequest --pin <PIN from `taskwire serve`>
  taskwire call RegisterInstanceRequest --json '{\"instanceId\":\"order-7\",\"imageId\":\"img-1\"}' \\
      --ca ca.pem --cert client.pem --key client.key.pem
  # Over TCP with TLS, where UDP cannot go (`taskwire serve --tcp 127.0.0.1:7701`):
  taskwire call HealthRequest --addr tcp://127.0.0.1:7701 --pin <PIN>

Names may be full (taskwire.instance.v1.RegisterInstanceRequest) or short when only one
package declares them. Unary and server-streaming requests are sent; one-way requests are
sent without waiting. Each answer is printed as one JSON object per line.")]
pub(crate) struct CallArgs {
    /// The request's message name.
    #[arg(required_unless_present = "list")]
    message: Option<String>,
    /// The request body in canonical proto3 JSON.
    #[arg(long, default_value = "{}")]
    json: String,
    /// List the request types instead of calling.
    #[arg(long)]
    list: bool,
    /// With --list: print JSON lines instead of a table.
    #[arg(long, requires = "list")]
    list_json: bool,
    /// Give up after this many seconds.
    #[arg(long, default_value_t = 30.0)]
    timeout: f64,
    #[command(flatten)]
    client: ClientArgs,
}

pub(crate) async fn run(args: CallArgs) -> Result<(), CliError> {
    if args.list {
        return list(args.list_json);
    }
    let request = parse_request(args.message.as_deref().unwrap_or_default(), &args.json)?;
    let name = request.name();
    let rpc = registry::rpc_by_request(request.type_id()).ok_or_else(|| {
        CliError::msg(format!(
            "{} is not the request of any rpc (see `taskwire call --list`)",
            request.name()
        ))
    })?;
    if !(args.timeout.is_finite() && args.timeout > 0.0) {
        return Err(CliError::msg(format!(
            "--timeout {} is not a positive number of seconds",
            args.timeout
        )));
    }
    let options = CallOptions::new().timeout(Duration::from_secs_f64(args.timeout.min(86_400.0)));
    let client = args.client.connect().await?;
    match rpc.shape {
        CallShape::Unary => {
            let answer = client
                .call(request, options)
                .await
                .map_err(|e| call_failure(&args.client, e))?;
            print_message(&answer)?;
        }
        CallShape::ServerStreaming => {
            let mut stream = client
                .server_stream(request, options)
                .await
                .map_err(|e| call_failure(&args.client, e))?;
            while let Some(item) = stream
                .next()
                .await
                .map_err(|e| call_failure(&args.client, e))?
            {
                print_message(&item)?;
            }
        }
        CallShape::OneWay => {
            client
                .send(request)
                .await
                .map_err(|e| call_failure(&args.client, e))?;
            print_line(format_args!("{{\"sent\":{name:?}}}"))?;
        }
        shape => {
            return Err(CliError::msg(format!(
                "{} opens a {:?} call, which `taskwire call` cannot drive; use the crates (see the README)",
                name, shape
            )));
        }
    }
    client.close().await;
    Ok(())
}

fn call_failure(client: &ClientArgs, error: CallError) -> CliError {
    match error {
        CallError::Status(status) => CliError::msg(format!("the server answered {status}")),
        other => CliError::msg(format!("calling {}: {other}", client.addr)),
    }
}

fn print_message(message: &AnyMessage) -> Result<(), CliError> {
    let body = message
        .serialize_json_body(serde_json::value::Serializer)
        .map_err(|e| CliError::msg(format!("printing {}: {e}", message.name())))?;
    let line = serde_json::json!({ "type": message.name(), "body": body });
    print_line(format_args!("{line}"))?;
    Ok(())
}

/// The request `name` names, parsed from its canonical JSON `body`.
pub(crate) fn parse_request(name: &str, body: &str) -> Result<AnyMessage, CliError> {
    let info = resolve(name)?;
    AnyMessage::deserialize_json_body(info.type_id, &mut serde_json::Deserializer::from_str(body))
        .map_err(|e| CliError::msg(format!("the JSON body is not a valid {}: {e}", info.name)))
}

/// The message a full or unambiguous short name means.
fn resolve(name: &str) -> Result<&'static MessageInfo, CliError> {
    if let Some(info) = registry::by_name(name) {
        return Ok(info);
    }
    let matches: Vec<&MessageInfo> = registry::messages()
        .iter()
        .filter(|info| info.name.rsplit('.').next() == Some(name))
        .collect();
    match matches.as_slice() {
        [one] => Ok(one),
        [] => Err(CliError::msg(format!(
            "{name:?} is not a taskwire message (see `taskwire call --list`)"
        ))),
        many => Err(CliError::msg(format!(
            "{name:?} is declared by several packages; use one of: {}",
            many.iter()
                .map(|info| info.name)
                .collect::<Vec<_>>()
                .join(", ")
        ))),
    }
}

fn list(json: bool) -> Result<(), CliError> {
    for rpc in registry::rpcs() {
        let request = registry::by_type_id(rpc.request_type_id).map_or("?", |i| i.name);
        let response = rpc
            .response_type_id
            .and_then(registry::by_type_id)
            .map_or("-", |i| i.name);
        if json {
            print_line(format_args!(
                "{}",
                serde_json::json!({
                    "method": rpc.method,
                    "request": request,
                    "response": response,
                    "shape": format!("{:?}", rpc.shape),
                })
            ))?;
        } else {
            print_line(format_args!(
                "{request:<58} {:<16} {}",
                format!("{:?}", rpc.shape),
                rpc.method
            ))?;
        }
    }
    Ok(())
}
