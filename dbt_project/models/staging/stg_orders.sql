select
    cast(order_id as bigint) as order_id,
    cast(customer_id as bigint) as customer_id,
    cast(order_date as date) as order_date,
    lower(cast(status as varchar)) as status
from {{ source('orders', 'orders') }}
